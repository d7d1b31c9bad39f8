"""``python -m soundvcm.cli``."""

import sys

from soundvcm.cli import main

sys.exit(main())
