import sys

from exposure_guard_prober.cli import main

sys.exit(main())
