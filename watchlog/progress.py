"""Progress of long steps a person can follow: a tqdm bar in a terminal, a few log lines
elsewhere (CI, a log file, a batch job), nothing for steps that end quickly.

    for chunk in progress(chunks, total=n_chunks, desc="co-watch blocks", logger=log):
        ...

The mode comes from `NCF_GLMIX_PROGRESS`: `auto` (default: a bar when stderr is a terminal,
else log lines), `bar`, `log` or `off`. In log mode a step that runs longer than
`LOG_AFTER_S` seconds writes one line when it crosses each quarter of its total, at most one
every `LOG_EVERY_S` seconds between quarters when there is no total, and a last line with its
time: a 20-minute step writes about five lines, a 2-second step none. The bars appear only
after `BAR_DELAY_S`, so quick loops (e.g. the ranking of every validation epoch) stay silent.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["MODE_ENV", "progress", "progress_mode"]

MODE_ENV = "NCF_GLMIX_PROGRESS"
MODES = ("auto", "bar", "log", "off")
LOG_AFTER_S = 10.0  # log mode: a step shorter than this writes nothing
LOG_EVERY_S = 60.0  # log mode without a total: at most one line a minute
BAR_DELAY_S = 2.0  # bar mode: a bar shows once a step has run this long

T = TypeVar("T")
_log = logging.getLogger(__name__)


def progress_mode() -> str:
    """`bar`, `log` or `off`: the environment's choice, `auto` resolved against stderr."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(
            f"{MODE_ENV}={os.environ[MODE_ENV]!r}: must be one of {', '.join(MODES)} "
            "(auto = a bar on a terminal, log lines otherwise)"
        )
    if mode == "auto":
        return "bar" if _is_terminal(sys.stderr) else "log"
    return mode


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    logger: logging.Logger | None = None,
) -> Iterator[T]:
    """Iterate `iterable`, showing progress as `progress_mode()` says (module docstring).

    total: the number of items (default `len(iterable)` when it has one); `desc` names the
    step in the bar or the log line; `logger`: the calling module's logger (log mode)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    mode = progress_mode()
    if mode == "off":
        return iter(iterable)
    if mode == "bar":
        from tqdm import tqdm

        return iter(
            tqdm(iterable, total=total, desc=desc, unit=unit, delay=BAR_DELAY_S, leave=False)
        )
    return _logged(iterable, total, desc, unit, logger or _log)


def _logged(
    iterable: Iterable[T], total: int | None, desc: str, unit: str, logger: logging.Logger
) -> Iterator[T]:
    """Yield the items, logging at quarter crossings (or each minute) once LOG_AFTER_S passed."""
    start = last = time.perf_counter()
    quarter = 0  # quarters of `total` already reported
    spoke = False
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.perf_counter()
        if now - start < LOG_AFTER_S:
            continue
        if total:
            reached = min(4, 4 * done // total)
            if reached <= quarter or done >= total:
                continue
            quarter = reached
        elif now - last < LOG_EVERY_S:
            continue
        last, spoke = now, True
        logger.info("%s: %s", desc, _status(done, total, unit, now - start))
    if spoke:
        logger.info("%s: done, %s", desc, _status(done, total, unit, time.perf_counter() - start))


def _status(done: int, total: int | None, unit: str, elapsed: float) -> str:
    if not total:
        return f"{done:,} {unit} in {elapsed:,.0f} s"
    left = elapsed * (total - done) / max(done, 1)
    eta = f", about {left:,.0f} s left" if done < total else ""
    return f"{done:,}/{total:,} {unit} ({100 * done / total:.0f}%) in {elapsed:,.0f} s{eta}"
