import sys

from exposure_guard.cli import main

sys.exit(main())
