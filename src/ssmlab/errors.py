"""User-facing errors. The CLI prints `error: <message>` on one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (unknown key, value out of range, missing or corrupt file)."""
