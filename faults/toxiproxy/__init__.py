"""Our Toxiproxy-API-compatible server (see server.py); ``ToxiproxyServer`` for in-process use.

The import is lazy so that ``python -m faults.toxiproxy.server`` does not find its own
module already imported by the package (runpy warns about that).
"""
from __future__ import annotations

__all__ = ["ToxiproxyServer", "main"]


def __getattr__(name: str):
    if name in __all__:
        from faults.toxiproxy import server
        return getattr(server, name)
    raise AttributeError(name)
