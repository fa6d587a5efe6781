"""Our Toxiproxy-API server: ``chaosloco toxiproxy-server`` / ``python -m faults.toxiproxy.server``.

No Toxiproxy binary can be installed from the registries this project reaches, so this
serves the Toxiproxy 2.x REST API (api.py) over asyncio TCP proxies (proxy.py, link.py)
with Toxiproxy's toxics (toxics/). Flags mirror toxiproxy-server: ``--host``, ``--port``
(default 127.0.0.1:8474; 0 picks a free port), ``--seed`` (every random choice, unlike
Toxiproxy's own ``-seed``, really follows it), and ``--ready-file PATH``: once listening,
the bound ``host:port`` is written there atomically for a parent that waits on it.
SIGTERM/SIGINT close the API, every listener and every live connection, then exit 0.

Randomness: each (proxy, toxic, connection number) has its own RNG seeded from
``--seed``, so the toxicity draw, jitter and slice sizes of the k-th connection of a
proxy are the same on every run with that seed, however other connections interleave.

Known differences from Shopify's Toxiproxy 2.x:

- Within one direction a chunk passes the whole toxic chain before the next chunk
  enters it (Toxiproxy runs each toxic in its own goroutine). Latency still pipelines,
  because it counts from each chunk's arrival; two delaying toxics in series overlap
  less than in Toxiproxy.
- Updating a toxic replaces it on live connections: per-connection state restarts (a
  bandwidth toxic's schedule, limit_data's byte count), and a chunk it was holding goes on.
- reset_peer forwards the data it held if removed before its timeout fires (Toxiproxy
  drops it); timeout drops data, as in Toxiproxy.
- One side's EOF is passed on as a half-close (the other direction stays open until
  its own EOF); a read/write error closes both sides.
- ``/version`` answers plain text ``2.12.0-chaosloco``; no ``/metrics``, ``/events``,
  ``-config`` file, ``-proxy-metrics`` or TLS; error texts are close to, not always
  identical with, Toxiproxy's. Attributes must be non-negative whole numbers (Toxiproxy
  accepts some negatives and misbehaves); unknown attributes are ignored, as there.

Library use (tests, in-process backends)::

    server = ToxiproxyServer("127.0.0.1", 0, seed=7)
    host, port = server.start()   # event loop in a background thread
    ...
    server.stop()
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
import tempfile
import threading
from pathlib import Path

from aiohttp import web

from faults.toxiproxy.api import ToxiproxyApi
from faults.toxiproxy.proxy import join_address
from harness.errors import InfraError

log = logging.getLogger("toxiproxy")
START_TIMEOUT_S = 15.0


class _Running:
    """The API site and proxies on one event loop."""

    def __init__(self, host: str, port: int, seed: int) -> None:
        self.host, self.port = host, port
        self.api = ToxiproxyApi(seed)
        self.runner: web.AppRunner | None = None

    async def open(self) -> tuple[str, int]:
        self.runner = web.AppRunner(self.api.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self.runner.cleanup()
            raise InfraError(f"toxiproxy-server: cannot listen on {join_address(self.host, self.port)}: "
                             f"{e.strerror or e}") from e
        return self.host, self.runner.addresses[0][1]

    async def close(self) -> None:
        await self.api.close()
        if self.runner is not None:
            await self.runner.cleanup()


class ToxiproxyServer:
    """The server as a library: ``start()`` runs it in a daemon thread, ``stop()`` ends it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, seed: int | None = None) -> None:
        self.seed = secrets.randbits(32) if seed is None else seed
        self._running = _Running(host, port, self.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        assert self.address is not None, "start() first"
        return f"http://{join_address(*self.address)}"

    def start(self) -> tuple[str, int]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        outcome: dict = {}

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                outcome["address"] = loop.run_until_complete(self._running.open())
            except BaseException as e:  # reported to start()'s caller below
                outcome["error"] = e
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._running.close())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="toxiproxy-server", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise InfraError(f"toxiproxy-server did not start within {START_TIMEOUT_S:.0f} s")
        if "error" in outcome:
            raise outcome["error"]
        self.address = outcome["address"]
        return self.address

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> "ToxiproxyServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _write_ready_file(path: Path, text: str) -> None:
    """Atomic: a waiter sees no file or the whole address, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def _serve(args: argparse.Namespace, seed: int) -> None:
    running = _Running(args.host, args.port, seed)
    host, port = await running.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        address = join_address(host, port)
        log.info("toxiproxy-server listening on %s (seed %d)", address, seed)
        if args.ready_file:
            _write_ready_file(Path(args.ready_file), address)
        await stop.wait()
        log.info("toxiproxy-server shutting down")
    finally:
        await running.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaosloco toxiproxy-server",
                                description="Serve the Toxiproxy 2.x REST API and its TCP proxies.")
    p.add_argument("--host", default="127.0.0.1", help="API address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8474, help="API port (default 8474; 0 = a free port)")
    p.add_argument("--seed", type=int, default=None, help="seed for every random choice (default: random)")
    p.add_argument("--ready-file", default=None, help="write the bound host:port here once listening")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"toxiproxy-server: --port must be 0..65535 (got {args.port})", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    seed = secrets.randbits(32) if args.seed is None else args.seed
    try:
        asyncio.run(_serve(args, seed))
    except InfraError as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
