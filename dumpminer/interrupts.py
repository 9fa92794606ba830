"""
Interrupts that must not lose work: SIGINT and SIGTERM noted, not obeyed.

A walk stops on Ctrl-C and still reports what it walked. The steps after it
(counting the last batches, clustering, writing the report) are short and
must run whole, or that report is lost; :func:`signals_noted` holds signals
for their length, and the caller decides what the noted signals mean.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: The signals a user stops dumpminer with.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def set_handler(sig: int, handler: Any) -> Any:
    """signal.signal, except outside the main thread, where it cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(sig, handler)


@contextmanager
def signals_noted() -> Iterator[list[int]]:
    """Record SIGINT and SIGTERM in the yielded list instead of acting on them."""
    noted: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(signum)

    previous = {sig: set_handler(sig, note) for sig in STOP_SIGNALS}
    try:
        yield noted
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                set_handler(sig, handler)
