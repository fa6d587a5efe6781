"""The toxic interface: one small base class, optional abilities as separate protocols.

Like Toxiproxy's toxics/*.go, a toxic sees the bytes of one direction of one connection
and passes them on. Ours is a coroutine, ``pipe(data, emit, link)``: it may wait, split,
drop, or close the connection, and calls ``await emit(piece)`` for what goes on. The
chain of a direction is the toxics composed by their ``emit`` callbacks, so back-pressure
from the far socket reaches every toxic.

Interruption: every wait goes through ``link.wait_until(deadline, self)``, which returns
False as soon as this toxic is removed (or replaced by an update) from the link. A toxic
interrupted while holding data forwards it unchanged, so removing a toxic drops nothing
that was not meant to be dropped (``timeout``, ``reset_peer`` and ``limit_data`` drop by
design, as in Toxiproxy).

One toxic instance exists per (connection, toxic), created only when the toxicity draw
for that connection says the toxic applies; it may keep per-connection state.
"""
from __future__ import annotations

import random
from typing import Any, Awaitable, Callable, ClassVar, Mapping, Protocol, runtime_checkable

Emit = Callable[[bytes], Awaitable[None]]


class ToxicError(ValueError):
    """A toxic's attributes are invalid (the API answers 400)."""


class LinkControl(Protocol):
    """What a toxic may do to the connection it sits on."""

    async def wait_until(self, deadline: float, toxic: "Toxic") -> bool:
        """Wait until the monotonic ``deadline``; False if ``toxic`` was removed meanwhile."""

    def now(self) -> float: ...

    def close(self) -> None:
        """Close both sides of the connection after flushing what was written."""

    def reset(self) -> None:
        """Close both sides with a TCP RST (SO_LINGER 0), discarding unsent data."""


class Toxic:
    """Base: validated integer attributes, a per-connection RNG, pass-through ``pipe``."""

    type_name: ClassVar[str] = ""
    # attribute -> default; every attribute is a non-negative integer in the API
    defaults: ClassVar[Mapping[str, int]] = {}

    def __init__(self, attributes: Mapping[str, int], rng: random.Random) -> None:
        self.attributes = dict(attributes)
        self.rng = rng
        for key, value in self.attributes.items():
            setattr(self, key, value)

    @classmethod
    def validate(cls, attributes: Mapping[str, Any]) -> dict[str, int]:
        """Defaults filled in; unknown keys ignored (Toxiproxy ignores them too), values
        must be non-negative whole numbers."""
        out = dict(cls.defaults)
        for key in cls.defaults:
            if key not in attributes:
                continue
            value = attributes[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ToxicError(f"{cls.type_name}: attribute {key} must be a number, got {value!r}")
            if value != value or value in (float("inf"), float("-inf")):
                raise ToxicError(f"{cls.type_name}: attribute {key} must be finite, got {value!r}")
            if value < 0:
                raise ToxicError(f"{cls.type_name}: attribute {key} must be >= 0, got {value!r}")
            if value > 2**53:
                raise ToxicError(f"{cls.type_name}: attribute {key} is too large, got {value!r}")
            out[key] = int(value)
        cls.check(out)
        return out

    @classmethod
    def check(cls, attributes: Mapping[str, int]) -> None:
        """Cross-attribute checks for a subclass; raise ToxicError."""

    async def pipe(self, data: bytes, emit: Emit, link: LinkControl) -> None:
        await emit(data)


@runtime_checkable
class EndsStream(Protocol):
    """Optional ability: act when the direction's source sends EOF (slow_close)."""

    async def on_eof(self, link: LinkControl) -> None: ...


@runtime_checkable
class Watches(Protocol):
    """Optional ability: a task that lives as long as the toxic is on the connection
    (``timeout``'s close timer). It is cancelled when the toxic goes."""

    async def watch(self, link: LinkControl) -> None: ...
