import sys

from exposure_guard_server.cli import main

sys.exit(main())
