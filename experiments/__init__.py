"""Thin Hydra entry points around plain run(cfg) functions.

Importing the package registers the config schemas of conf/ncf, conf/data, conf/blend and
conf/glmix in Hydra's ConfigStore (experiments/schemas.py): their yaml files name them in their
defaults lists, so a config can only be composed after `experiments` (or any module in it) is
imported. It also registers the `${abspath:...}` resolver conf/paths/default.yaml uses
(experiments/paths.py).
"""

from experiments.paths import register_resolvers as _register_resolvers
from experiments.schemas import register as _register_schemas

_register_resolvers()
_register_schemas()
