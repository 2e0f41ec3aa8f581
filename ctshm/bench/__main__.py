"""``python -m ctshm.bench`` (the same as ``python -m ctshm bench``)."""

import sys

from .driver import main

sys.exit(main())
