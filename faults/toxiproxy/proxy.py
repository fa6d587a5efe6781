"""A named proxy: a listening socket, its upstream address, its toxics, its live links.

All methods run on the server's event loop (the REST handlers call them there), so
state changes need no locks. Enabling binds the listen address (``host:0`` picks a free
port, and ``listen`` then reports the real one, as Toxiproxy does; a later re-enable binds
that same port again); disabling closes the listener and every live connection (a
partition, as in Toxiproxy).
"""
from __future__ import annotations

import asyncio
import logging
import socket

from faults.toxiproxy.link import Link, ToxicSpec

log = logging.getLogger("toxiproxy")
UPSTREAM_CONNECT_S = 10.0  # bounded dial; a client whose upstream never answers is closed


class AddressError(ValueError):
    """A listen/upstream address is not ``host:port``."""


def split_address(text: object, what: str) -> tuple[str, int]:
    if not isinstance(text, str) or ":" not in text:
        raise AddressError(f"{what} must be host:port, got {text!r}")
    host, port_text = text.rsplit(":", 1)
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise AddressError(f"{what} has a bad port: {text!r}") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"{what} port out of range: {text!r}")
    return host, port


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str, *, seed: int) -> None:
        split_address(listen, "listen")
        split_address(upstream, "upstream")
        self.name, self.listen, self.upstream, self.seed = name, listen, upstream, seed
        self.enabled = False
        self.toxics: dict[str, ToxicSpec] = {}  # insertion order is chain order
        self._server: asyncio.base_events.Server | None = None
        self._links: set[Link] = set()
        self._handlers: set[asyncio.Task] = set()
        self._seq = 0  # connections accepted so far (keys the per-connection RNGs)

    def to_json(self) -> dict:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "toxics": [t.to_json() for t in self.toxics.values()]}

    # ---- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        if self.enabled:
            return
        host, port = split_address(self.listen, "listen")
        # One socket on the first address only: asyncio would bind every address a name
        # resolves to ("localhost": ::1 and 127.0.0.1), each on its own port when port is 0.
        family, _, _, _, sockaddr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        sock = socket.create_server(sockaddr[:2], family=family)
        try:
            self._server = await asyncio.start_server(self._accept, sock=sock)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        self.listen = join_address(host or bound[0], bound[1])
        self.enabled = True
        log.info("proxy %s listening on %s -> %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5.0)
        self.enabled = False

    async def set_upstream(self, upstream: str) -> None:
        split_address(upstream, "upstream")
        self.upstream = upstream  # new connections dial it; live ones keep theirs

    # ---- toxics ----------------------------------------------------------------
    def put_toxic(self, spec: ToxicSpec) -> None:
        """Add, or replace (an update) a toxic; live links switch to it at once."""
        self.toxics[spec.name] = spec
        self._push_toxics()

    def remove_toxic(self, name: str) -> None:
        del self.toxics[name]
        self._push_toxics()

    def clear_toxics(self) -> None:
        self.toxics.clear()
        self._push_toxics()

    def _push_toxics(self) -> None:
        specs = list(self.toxics.values())
        for link in self._links:
            link.set_toxics(specs)

    # ---- connections -------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        seq, self._seq = self._seq, self._seq + 1
        try:
            host, port = split_address(self.upstream, "upstream")
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(host, port), UPSTREAM_CONNECT_S)
            except (OSError, asyncio.TimeoutError) as e:
                log.warning("proxy %s: cannot reach upstream %s: %s", self.name, self.upstream, e)
                writer.close()
                return
            link = Link(proxy_name=self.name, seed=self.seed, seq=seq, client=(reader, writer),
                        upstream=upstream, toxics=self.toxics.values())
            self._links.add(link)
            try:
                await link.run()
            finally:
                self._links.discard(link)
                link.close()
        except asyncio.CancelledError:
            # stop() cancels us; this is the top of the handler task, and asyncio's
            # start_server logs a cancelled handler as an error, so end normally.
            writer.close()
        finally:
            self._handlers.discard(task)
