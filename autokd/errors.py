"""User-facing errors: the CLI prints ``str(err)`` as one line and exits 2, never a traceback."""
from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, unknown name). The CLI exits 2."""
