"""Logging with upstream's level names and line format: `2006-01-02 15:04:05.000 [LEVEL] msg`,
on stdout (upstream's flog), level `none` silent, and upstream's noise filter."""

from __future__ import annotations

import errno
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


#: Errors that only mean "the other side went away" (upstream: io.EOF, net.ErrClosed,
#: io.ErrClosedPipe, EPIPE, ECONNRESET, timeouts). Layers add their own with add_benign().
_BENIGN: tuple[type[BaseException], ...] = (EOFError, BrokenPipeError, ConnectionResetError,
                                            TimeoutError)
_BENIGN_ERRNOS = {errno.EPIPE, errno.ECONNRESET, errno.ETIMEDOUT, errno.EBADF}


def add_benign(*types: type[BaseException]) -> None:
    """Register exception types (e.g. a closed-stream error) as benign for the noise filter."""
    global _BENIGN
    _BENIGN = _BENIGN + tuple(t for t in types if t not in _BENIGN)


def is_benign(value: object) -> bool:
    if isinstance(value, _BENIGN):
        return True
    if isinstance(value, OSError) and value.errno in _BENIGN_ERRNOS:
        return True
    cause = getattr(value, "__cause__", None)
    return isinstance(cause, BaseException) and cause is not value and is_benign(cause)


class NoiseFilter(logging.Filter):
    """Upstream's flog rule: above debug, a line whose arguments include a benign error is
    dropped entirely (e.g. every probe stream's EOF)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("paqet").getEffectiveLevel() <= logging.DEBUG:
            return True
        args = record.args
        if isinstance(args, dict):
            args = tuple(args.values())
        if any(is_benign(a) for a in args or ()):
            return False
        return not (record.exc_info and is_benign(record.exc_info[1]))


_handler: logging.Handler | None = None


def setup(level: str = "info", stream=None) -> None:
    """Route the `paqet` loggers to stdout (upstream's flog) at `level`."""
    global _handler
    root = logging.getLogger("paqet")
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stdout)
    _handler.setFormatter(UpstreamFormatter())
    _handler.addFilter(NoiseFilter())
    root.addHandler(_handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    root.propagate = False


def set_level(level: str) -> None:
    """A new threshold for the `paqet` loggers (a reload's log.level)."""
    logging.getLogger("paqet").setLevel(LEVELS.get(level, logging.INFO))
