"""What every subcommand shares below cli/main.py: the exit codes (docs/cli.md) and loading
the configuration or exiting with its one-line error."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


def load_or_exit(path: str, role: str | None = None):
    """The loaded Config; a file that does not load (or has another `role`) prints one line
    on stderr and exits with EXIT_CONFIG."""
    from paqet.config import ConfigError, load_config
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"paqet: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if role is not None and cfg.role != role:
        print(f"paqet: role: this command requires a {role} configuration "
              f"({path} has role {cfg.role!r})", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    return cfg
