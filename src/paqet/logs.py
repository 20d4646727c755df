"""Logging with upstream's level names and line format: `2006-01-02 15:04:05.000 [LEVEL] msg`."""

from __future__ import annotations

import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR, "fatal": logging.CRITICAL, "none": logging.CRITICAL + 10}
NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN",
         logging.ERROR: "ERROR", logging.CRITICAL: "FATAL"}


class UpstreamFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        ms = int(record.msecs)
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR and \
                logging.getLogger("paqet").isEnabledFor(logging.DEBUG):
            msg += "\n" + self.formatException(record.exc_info)
        # control characters are written escaped, as upstream's flog does
        msg = "".join(c if c == "\n" or (" " <= c and not "\x7f" <= c <= "\x9f") else f"\\x{ord(c):02x}"
                      for c in msg)
        return f"{time.strftime('%Y-%m-%d %H:%M:%S', t)}.{ms:03d} [{NAMES.get(record.levelno, record.levelname)}] {msg}"


_handler: logging.Handler | None = None


def setup(level: str = "info", stream=None) -> None:
    """Route the `paqet` loggers to stdout (upstream's flog) at `level`."""
    global _handler
    root = logging.getLogger("paqet")
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stdout)
    _handler.setFormatter(UpstreamFormatter())
    root.addHandler(_handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    root.propagate = False
