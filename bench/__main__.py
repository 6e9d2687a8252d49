"""Run every benchmark module and print one table of figures.

Each module in MODULES has `run() -> list[tuple[str, str, str]]` returning (figure, value, target) rows.
`python -m bench NAME...` runs only the named modules.
"""

from __future__ import annotations

import importlib
import sys
import time

from tabulate import tabulate

HEADERS = ["figure", "value", "target"]
MODULES = ["bench.bus", "bench.nexus", "bench.throughput", "bench.singularity", "bench.genesis", "bench.centralcloud", "bench.nats",
           "bench.partitions"]


def main(argv: list[str]) -> int:
    chosen = [m for m in MODULES if not argv or m.split(".")[-1] in argv]
    rows: list[tuple[str, str, str]] = []
    for name in chosen:
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        mod = importlib.import_module(name)
        got = mod.run()
        if got:
            print(tabulate(got, headers=HEADERS, tablefmt="plain", disable_numparse=True), flush=True)
        rows += got
        print(f"   ({time.monotonic() - t0:.0f}s)", flush=True)
    print()
    print(tabulate(rows, headers=HEADERS, tablefmt="github", disable_numparse=True))  # for a README or an issue
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
