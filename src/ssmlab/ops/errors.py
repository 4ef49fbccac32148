"""Errors raised by ssmlab.ops for bad arguments.

`OpsInputError` is both a `ssmlab.errors.UserError` (the CLI prints it on one line, exit code 2)
and a `ValueError` (what callers of a numerical op expect for a bad shape or backend name).
"""

from __future__ import annotations

from ssmlab.errors import UserError


class OpsInputError(UserError, ValueError):
    """A scan op was called with a bad shape, dtype, device or backend name."""
