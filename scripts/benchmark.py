"""Benchmark and accuracy harness: the same as the ``vwt-bench`` command.

    python scripts/benchmark.py --model clip-b16-random --images sample --out results/clip-b16
    python scripts/benchmark.py --quick --out /tmp/vwt-smoke

See ``python scripts/benchmark.py --help`` and :mod:`vwt.bench`.
"""

import sys

from vwt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
