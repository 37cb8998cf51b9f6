"""``python -m swavbench``: the same command line as the ``swavbench`` script."""

import sys

from swavbench import main

sys.exit(main())
