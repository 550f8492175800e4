"""``python -m vwt.bench`` = ``vwt-bench``."""

import sys

from .cli import main

sys.exit(main())
