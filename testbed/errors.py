"""The error a user's input raises: one line naming what was wrong and where.

Kept in a module of its own so that every part that checks input (the config,
the model and dataset registries, the fleet) can raise it without importing the
config, which validates through them.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config (or input named by one) that cannot be used; the message is one line naming key and file."""
