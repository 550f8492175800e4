"""``python -m vwt.bench`` = ``vwt-bench``."""

import sys

from ..cli_bench import main

sys.exit(main())
