"""One proxied TCP connection: two directions, each a reader, a bounded queue and a
writer that runs the chunk through that direction's toxic chain.

Reading and writing are separate tasks so a delaying toxic (latency) is pipelined: the
reader keeps stamping chunks with their arrival time while the writer holds earlier
ones. The queue is bounded, so a slow far side (or a bandwidth toxic) pushes back on
the sender through TCP instead of growing memory.

The chain is swapped live: ``set_toxics`` replaces the per-connection toxic instances;
an instance being removed gets its ``removed`` event set, which ends any wait it is in
and makes it pass data through, so bytes in flight are not lost.
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import logging
import struct
from typing import Iterable

from faults.toxiproxy.toxics import EndsStream, Toxic, Watches

READ_SIZE = 64 * 1024
QUEUE_CHUNKS = 16  # at most ~1 MiB read ahead per direction
log = logging.getLogger("toxiproxy")


@dataclasses.dataclass(frozen=True, eq=False)
class ToxicSpec:
    """A toxic as the API knows it; identity matters (an update makes a new spec)."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int]
    cls: type[Toxic]

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": self.toxicity, "attributes": dict(self.attributes)}


@dataclasses.dataclass(eq=False)
class _Instance:
    spec: ToxicSpec
    toxic: Toxic | None  # None: the toxicity draw said "not on this connection"
    watcher: asyncio.Task | None = None


class Direction:
    """One direction of a link; the ``LinkControl`` its toxics see."""

    def __init__(self, link: "Link", stream: str, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        self.link, self.stream, self.src, self.dst = link, stream, src, dst
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        self.instances: dict[str, _Instance] = {}
        self.arrived = 0.0  # when the chunk being processed was read (monotonic)
        self.tasks: list[asyncio.Task] = []

    # ---- LinkControl ---------------------------------------------------------
    def now(self) -> float:
        return self.loop.time()

    async def wait_until(self, deadline: float, toxic: Toxic) -> bool:
        removed: asyncio.Event = toxic.removed  # type: ignore[attr-defined]
        delay = deadline - self.loop.time()
        if removed.is_set():
            return False
        if delay <= 0:
            return True
        try:
            await asyncio.wait_for(removed.wait(), delay)
        except asyncio.TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.link.close()

    def reset(self) -> None:
        self.link.reset()

    # ---- chain ---------------------------------------------------------------
    def set_toxics(self, specs: Iterable[ToxicSpec]) -> None:
        keep: dict[str, _Instance] = {}
        for spec in specs:
            old = self.instances.pop(spec.name, None)
            if old is not None and old.spec is spec:
                keep[spec.name] = old
                continue
            if old is not None:
                self._retire(old)
            keep[spec.name] = self._instance(spec)
        for old in self.instances.values():
            self._retire(old)
        self.instances = keep

    def _instance(self, spec: ToxicSpec) -> _Instance:
        # One RNG per (seed, proxy, toxic, connection number): the toxicity draw and any
        # jitter/slice sizes are the same on every run with the same seed, whatever the
        # interleaving of other connections. str seeds hash deterministically (sha512).
        rng = random.Random(f"{self.link.seed}/{self.link.proxy_name}/{spec.name}/{self.link.seq}")
        applies = rng.random() < spec.toxicity
        inst = _Instance(spec, spec.cls(spec.attributes, rng) if applies else None)
        if inst.toxic is not None:
            inst.toxic.removed = asyncio.Event()  # type: ignore[attr-defined]
            if isinstance(inst.toxic, Watches):
                inst.watcher = asyncio.ensure_future(self._watch(inst.toxic))
        return inst

    async def _watch(self, toxic: Toxic) -> None:
        try:
            await toxic.watch(self)  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            raise
        except Exception:
            self.link.close()

    @staticmethod
    def _retire(inst: _Instance) -> None:
        if inst.toxic is not None:
            inst.toxic.removed.set()  # type: ignore[attr-defined]
        if inst.watcher is not None:
            inst.watcher.cancel()

    def retire_all(self) -> None:
        for inst in self.instances.values():
            self._retire(inst)

    def _chain(self) -> list[Toxic]:
        return [inst.toxic for inst in self.instances.values() if inst.toxic is not None]

    # ---- pumping -------------------------------------------------------------
    def start(self) -> None:
        self.tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._write())]

    async def _read(self) -> None:
        try:
            while True:
                data = await self.src.read(READ_SIZE)
                await self.queue.put((self.loop.time(), data))
                if not data:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # reset by the peer, or a bug: either way this link is over
            self.link.close()

    async def _write(self) -> None:
        try:
            while True:
                self.arrived, data = await self.queue.get()
                if not data:
                    break
                chain = self._chain()
                if chain:
                    await self._emitter(chain, 0)(data)
                else:
                    await self._send(data)
                if self.link.closed:
                    return
            for toxic in self._chain():
                if isinstance(toxic, EndsStream):
                    await toxic.on_eof(self)
            if not self.link.closed and self.dst.can_write_eof():
                self.dst.write_eof()  # half-close: the peer sees EOF, the other way stays open
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a peer gone mid-write, or a toxic's bug: end the link, keep serving
            if not isinstance(e, (ConnectionError, OSError)):
                log.exception("link %s#%d %s: toxic chain failed", self.link.proxy_name, self.link.seq, self.stream)
            self.link.close()

    def _emitter(self, chain: list[Toxic], i: int):
        if i == len(chain):
            return self._send
        toxic, after = chain[i], self._emitter(chain, i + 1)

        async def emit(data: bytes) -> None:
            if self.link.closed:
                return  # a toxic closed the connection: the rest is dropped by design
            if toxic.removed.is_set():  # type: ignore[attr-defined]
                await after(data)  # removed while this chunk was in the chain
            else:
                await toxic.pipe(data, after, self)
        return emit

    async def _send(self, data: bytes) -> None:
        if self.link.closed:
            return
        self.dst.write(data)
        await self.dst.drain()


class Link:
    """A client connection and its upstream connection, joined by two directions."""

    def __init__(self, *, proxy_name: str, seed: int, seq: int,
                 client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 toxics: Iterable[ToxicSpec]) -> None:
        self.proxy_name, self.seed, self.seq = proxy_name, seed, seq
        self.writers = (client[1], upstream[1])
        self.closed = False
        self.directions = {"upstream": Direction(self, "upstream", client[0], upstream[1]),
                           "downstream": Direction(self, "downstream", upstream[0], client[1])}
        self.set_toxics(list(toxics))

    def set_toxics(self, specs: list[ToxicSpec]) -> None:
        for stream, direction in self.directions.items():
            direction.set_toxics(s for s in specs if s.stream == stream)

    async def run(self) -> None:
        for d in self.directions.values():
            d.start()
        tasks = [t for d in self.directions.values() for t in d.tasks]
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.close()

    def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        for d in self.directions.values():
            d.retire_all()
            for t in d.tasks:
                if t is not current:
                    t.cancel()

    def close(self) -> None:
        """Flush what was written, then FIN both sides."""
        if self.closed:
            return
        self.closed = True
        self._stop_tasks()
        for w in self.writers:
            w.close()

    def reset(self) -> None:
        """RST both sides: SO_LINGER 0 and abort, unsent data discarded."""
        if self.closed:
            return
        self.closed = True
        self._stop_tasks()
        for w in self.writers:
            sock = w.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            w.transport.abort()
