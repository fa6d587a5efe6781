"""Calling lock-taking code from a signal handler, safely.

A Python signal handler runs on the main thread between two bytecodes, so if it calls
``threading.Event.set()`` while the main thread already holds that event's lock (inside
``Event.wait``, or inside a first handler interrupted by a second SIGTERM), the main
thread deadlocks on itself. Seen for real: ``chaosloco train`` sends SIGTERM twice and a
learner hung in ``stop_event.set()`` until it was SIGKILLed, losing its final log line.

``SignalRelay(fn)`` returns a callable that is safe in a handler: it writes one byte to
a pipe (no Python lock involved) and a daemon thread calls ``fn`` on the other end. The
standard library has the pieces (``os.pipe``, ``signal.set_wakeup_fd`` serves asyncio)
but no such relay for threaded code, hence these few lines.
"""
from __future__ import annotations

import os
import threading
from typing import Callable


class SignalRelay:
    def __init__(self, fn: Callable[[], None], name: str = "signal-relay") -> None:
        self._fn = fn
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def __call__(self) -> None:
        """Async-signal-safe: one non-blocking write."""
        try:
            os.write(self._w, b"\0")
        except OSError:  # pipe full (a call is already pending) or relay closed
            pass

    def _loop(self) -> None:
        try:
            while os.read(self._r, 64):
                self._fn()
        finally:
            os.close(self._r)

    def close(self) -> None:
        """Ends the relay thread (EOF on its pipe); idempotent."""
        if self._w >= 0:
            os.close(self._w)
            self._w = -1
        self._thread.join(timeout=5.0)
