"""Toxics by name, one per module (like Toxiproxy's toxics/*.go).

``TOXICS`` maps the API's ``type`` to the class; ``register`` is the decorator each
module uses. ``noop`` is Toxiproxy's pass-through, useful in tests.
"""
from __future__ import annotations

from faults.toxiproxy.toxics.base import EndsStream, LinkControl, Toxic, ToxicError, Watches

TOXICS: dict[str, type[Toxic]] = {}


def register(cls: type[Toxic]) -> type[Toxic]:
    TOXICS[cls.type_name] = cls
    return cls


def toxic_class(type_name: str) -> type[Toxic]:
    try:
        return TOXICS[type_name]
    except (KeyError, TypeError):
        raise ToxicError(f"invalid toxic type: {type_name!r}") from None


# Importing the modules registers them.
from faults.toxiproxy.toxics import (  # noqa: E402,F401
    bandwidth, latency, limit_data, noop, reset_peer, slicer, slow_close, timeout,
)

__all__ = ["TOXICS", "register", "toxic_class", "Toxic", "ToxicError", "LinkControl", "EndsStream", "Watches"]
