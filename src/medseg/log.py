"""Library messages go through :mod:`logging` (logger ``medseg``); the command line decides what is shown.

The library never prints: it logs notes (``resuming from ...``, ``checkpoint saved to ...``) at INFO and
problems it works around at WARNING. Used as a library, Python's defaults apply (warnings reach stderr,
notes are silent until the caller configures logging). ``medseg`` configures it with :func:`configure`:
INFO and up to stdout by default, warnings only with ``-q``, DEBUG too with ``-v``.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("medseg")


class _CurrentStdout(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` is at the time of the message (pytest's capture,
    a redirected stream), plain text with no level prefix for notes."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr  # no flush of the old one
        super().emit(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"warning: {text}"


def configure(verbosity: int = 0) -> None:
    """Show ``medseg`` messages on the terminal: ``verbosity`` < 0 warnings only, 0 notes, > 0 debug."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    for handler in [h for h in logger.handlers if isinstance(h, _CurrentStdout)]:
        logger.removeHandler(handler)
    handler = _CurrentStdout()
    handler.setFormatter(_Format())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
