"""The root of edgecut's exceptions; each side (agent, server) subclasses it in its own errors.py.

The CLI prints an `EdgecutError` as one clear message and exits with `exit_code` (never a traceback).
"""


class EdgecutError(Exception):
    """An error the user can act on; `str(exc)` says what went wrong and what to do."""

    exit_code = 2


class ConfigError(EdgecutError):
    """A config file, variable or command-line value is invalid."""
