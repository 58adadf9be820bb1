"""`make bench`: run every benchmark module in this folder (bench_*.py), one process each.

Each prints its table and writes benchmarks/results/<name>.json; copy the tables into
benchmarks/README.md when they change. Extra arguments are not forwarded: run a single
benchmark with `python -m benchmarks.<name> --help` for its options.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = f"benchmarks.{path.stem}"
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", name], check=False).returncode
        print(f"--- {name}: exit {code}, {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
