"""``python -m exposure_guard.qpkg_inspect FILE [--json] [--quiet]``: the package inspector's command.
The inspector itself lives in exposure_guard/packaging/ (not part of the agent's runtime core)."""

from __future__ import annotations

import sys

from exposure_guard.packaging.qpkg_inspect import Inspection, inspect_qpkg, main, render

__all__ = ["Inspection", "inspect_qpkg", "main", "render"]

if __name__ == "__main__":
    sys.exit(main())
