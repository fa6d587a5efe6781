"""A signal handler that must set an Event uses SignalRelay: a handler running while
the main thread holds the event's lock would deadlock on a plain ``Event.set()``."""
from __future__ import annotations

import os
import signal
import threading

from trainers.signal_relay import SignalRelay


def test_handler_firing_while_the_event_lock_is_held_does_not_deadlock():
    event = threading.Event()
    relay = SignalRelay(event.set)
    previous = signal.signal(signal.SIGUSR1, lambda *_: relay())
    try:
        with event._cond:  # what the main thread holds inside Event.wait / a first handler
            os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs here, lock held
            for _ in range(1000):  # give the interpreter bytecodes at which to run it
                pass
            assert not event.is_set()  # the relay thread is waiting for the lock we hold
        assert event.wait(timeout=5.0), "the relay never set the event"
    finally:
        signal.signal(signal.SIGUSR1, previous)
        relay.close()


def test_close_ends_the_relay_thread_and_later_calls_are_harmless():
    calls = []
    relay = SignalRelay(lambda: calls.append(1))
    relay.close()
    relay()
    relay.close()
    assert not relay._thread.is_alive() and calls == []
