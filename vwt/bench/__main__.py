"""``python -m vwt.bench`` = ``vwt-bench``."""

import sys

from ..cli.bench import main

sys.exit(main())
