"""``python -m simulator`` is ``ivrkit-sim``."""

import sys

from simulator.cli import main

sys.exit(main())
