"""Safe fixes: reversible actions, the change journal, and applying/undoing them. Imports no check:
checks plan fixes with these actions, ``undo`` works from the journal alone."""

from exposure_guard.fixes import actions, igd  # noqa: F401  (every action kind registers on import)
