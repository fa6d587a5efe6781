"""The synchronizer: a long-running TCP service holding the global model (SPEC §1).

``python -m trainers.syncer --run-dir DIR --host H --port P --control-port CP
[--config DIR/config.json] [--secret-file DIR/secret]``

Protocol (frames of ``trainers.wire``, one TCP connection per RPC, see
``trainers.client``):

- ``JOIN {learner}`` → ``JOIN_OK {incarnation, resume_cursor, since, versions, config}``
  with every global fragment (tensors named by parameter). Logged ``join``.
- ``PUSH {learner, incarnation, fragment, key, base_version, tokens, steps, range}``
  with the learner's fragment → ``PUSH_ACK {status, reason, version, fragment}`` with the
  current global fragment. The reply to a push that joins a round is sent only after
  that round was merged and checkpointed, so push and pull are one round trip;
  ``status`` is ``merged``, ``duplicate`` (the key was merged before: never twice) or
  ``rejected`` (``reason``; the learner resyncs from the fragment in the reply).
- ``PULL {fragment}`` → ``PULL_OK {version}`` with the fragment (resync).
- ``HEARTBEAT {learner, incarnation, step_s}`` → ``HEARTBEAT_OK {versions}``.
- A frame that fails authentication, is malformed or oversized is logged as ``reject``
  with that reason and answered ``ERROR``; the service keeps serving.

Threads: one per connection (stdlib ``ThreadingTCPServer``: blocking sockets pair with
``wire.read_frame``'s deadlines, and a handler waiting for its round's merge simply
blocks on an Event), one merger (merges rounds when their quorum and grace window say
so), one evaluator (global model on the held-out split at start, every
``eval_every_s`` and at stop), and the control port (``trainers.control``). State and
durability live in ``trainers.syncer_state``. On SIGTERM it stops serving, evaluates
once more and logs ``syncer_stop``; after a kill -9 a restart restores ``DIR/state``.
"""
from __future__ import annotations

import argparse
import os
import faulthandler
import signal
import socketserver
import sys
import threading
import time
from pathlib import Path

import torch

from harness.errors import ChaoslocoError, ConfigError
from trainers import config as config_mod
from trainers import wire
from trainers.client import pack_fragment, unpack_fragment
from trainers.config import Quantize, TrainerConfig
from trainers.control import ControlServer
from trainers.data import eval_batches, load_corpus
from trainers.evaluate import eval_loss
from trainers.events import EventLog
from trainers.fragments import FragmentMap
from trainers.model import build_model
from trainers.signal_relay import SignalRelay
from trainers.store import DurableStore
from trainers.syncer_state import Pending, SyncerState, effective_schedule

_MERGER_TICK_S = 0.2  # longest the merger sleeps without re-checking (elastic timeouts)


def read_secret(path: str | Path) -> bytes:
    try:
        text = Path(path).read_text().strip()
        return bytes.fromhex(text)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the run secret (hex): {e}", file=str(path)) from e


class Syncer:
    """The service; ``serve_forever`` runs until ``stop`` (from a signal or a test)."""

    def __init__(self, cfg: TrainerConfig, run_dir: Path, secret: bytes, host: str, port: int,
                 control_port: int) -> None:
        torch.set_num_threads(1)
        self.cfg, self.run_dir, self.secret = cfg, run_dir, secret
        self.log = EventLog(run_dir / "events.jsonl", "syncer")
        model = build_model(cfg.preset, cfg.seq_len, cfg.seed)
        self.fmap = FragmentMap.from_model(model, effective_schedule(cfg)[0])
        self.eval_model = model
        initial = [self.fmap.flatten(model, p) for p in range(self.fmap.P)]
        self.state = SyncerState(cfg, self.fmap, initial, DurableStore(run_dir), self.log)
        self.state.restore()
        # A push carries at most one fragment: twice the whole model in float32 is a
        # generous cap that still refuses a hostile 4 GB length before allocating it.
        self.max_payload = 2 * 4 * self.fmap.total_numel + 65536
        self._stopping = threading.Event()
        self._eval_batches = eval_batches(load_corpus(cfg.data), cfg.eval_batches, cfg.batch_size,
                                          cfg.seq_len, cfg.seed)
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._handle(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((host, port), Handler, bind_and_activate=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.control = ControlServer(host if host != "0.0.0.0" else "0.0.0.0", control_port, self.state.status)
        self.log.emit("syncer_start", pid=os.getpid(), restored=self.state.restored,
                      versions=list(self.state.versions), fragment_numel=list(self.fmap.numel),
                      total_numel=self.fmap.total_numel, port=self.port, control_port=self.control.port)

    # ---- connection handling -------------------------------------------------------
    def _handle(self, sock) -> None:
        try:
            frame = wire.read_frame(sock, self.secret, self.max_payload, timeout_s=self.cfg.rpc_timeout_s)
        except wire.WireError as e:
            if e.reason in ("closed", "timeout"):
                return  # a probe or a dropped link: nothing was asked
            self.log.emit("reject", learner=None, fragment=None, key=None, reason=e.reason,
                          range=None, tokens=0, error=str(e)[:200])
            self._reply(sock, wire.MsgType.ERROR, {"reason": e.reason, "message": str(e)[:200]})
            return
        try:
            handler = {wire.MsgType.JOIN: self._join, wire.MsgType.PUSH: self._push,
                       wire.MsgType.PULL: self._pull, wire.MsgType.HEARTBEAT: self._heartbeat}.get(frame.msg_type)
            if handler is None:
                raise wire.Malformed(f"unexpected message type {frame.msg_type.name}")
            handler(sock, frame)
        except (wire.Malformed, KeyError, TypeError, ValueError) as e:
            h = frame.header if isinstance(frame.header, dict) else {}
            self.log.emit("reject", learner=_int_or_none(h.get("learner")), fragment=_int_or_none(h.get("fragment")),
                          key=h.get("key") if isinstance(h.get("key"), str) else None, reason="malformed",
                          range=None, tokens=0, error=str(e)[:200])
            self._reply(sock, wire.MsgType.ERROR, {"reason": "malformed", "message": str(e)[:200]})

    def _reply(self, sock, msg_type, header, tensors=None) -> int:
        try:
            return wire.write_frame(sock, msg_type, header, tensors, self.secret, timeout_s=self.cfg.rpc_timeout_s)
        except (wire.WireError, OSError):
            return 0  # the learner is gone; it retries (a push with the same key)

    def _learner(self, h: dict) -> int:
        m = h["learner"]
        if not isinstance(m, int) or not 0 <= m < self.cfg.learners:
            raise ValueError(f"learner id {m!r} not in 0..{self.cfg.learners - 1}")
        return m

    def _fragment_tensors(self, p: int, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return pack_fragment(self.fmap, p, flat, Quantize.NONE)  # replies stay exact

    def _join(self, sock, frame: wire.Frame) -> None:
        m = self._learner(frame.header)
        j = self.state.join(m, frame.nbytes)
        tensors = {}
        for p, flat in enumerate(j["params"]):
            tensors.update(pack_fragment(self.fmap, p, flat, Quantize.NONE, prefix=f"{p}/"))
        header = {"incarnation": j["incarnation"], "resume_cursor": j["resume_cursor"], "since": j["since"],
                  "versions": j["versions"], "config": self.cfg.to_dict(), "fragments": self.fmap.P}
        out = self._reply(sock, wire.MsgType.JOIN_OK, header, tensors)
        self.log.emit("join", learner=m, incarnation=j["incarnation"], resume_cursor=j["resume_cursor"],
                      since=j["since"], versions=j["versions"], bytes_in=frame.nbytes, bytes_out=out)

    def _push(self, sock, frame: wire.Frame) -> None:
        h = frame.header
        m, p = self._learner(h), int(h["fragment"])
        if not 0 <= p < self.fmap.P:
            raise ValueError(f"fragment {p} not in 0..{self.fmap.P - 1}")
        start, end = (int(x) for x in h["range"])
        item = Pending(learner=m, incarnation=int(h["incarnation"]), fragment=p, key=str(h["key"]),
                       base_version=int(h["base_version"]), tokens=int(h["tokens"]), steps=int(h["steps"]),
                       range=(start, end), params=torch.empty(0))
        self.log.emit("push", learner=m, incarnation=item.incarnation, fragment=p, key=item.key,
                      base_version=item.base_version, tokens=item.tokens, steps=item.steps,
                      range=[start, end], bytes_in=frame.nbytes)
        try:
            item.params = unpack_fragment(self.fmap, p, frame.tensors, Quantize(h.get("quantize", "none")))
        except (wire.Malformed, ValueError) as e:
            self.state._refuse(item, "malformed")
            self._reply(sock, wire.MsgType.ERROR, {"reason": "malformed", "message": str(e)[:200]})
            return
        outcome = self.state.push(item)
        status, reason, version = outcome.status, outcome.reason, outcome.version
        if outcome.pending is not None:
            # Bounded wait: a synchronous barrier can outlast it; the learner then retries
            # with the same key and waits on this same round (no reply = no ack).
            if not outcome.pending.done.wait(self.cfg.rpc_timeout_s) or self._stopping.is_set():
                return
            res = outcome.pending.result or {}
            status, reason, version = res.get("status"), res.get("reason"), res.get("version")
            if status == "unavailable":
                return
        flat, current = self.state.fragment(p)
        header = {"status": status, "reason": reason, "version": version, "fragment": p,
                  "current_version": current, "key": item.key}
        out = self._reply(sock, wire.MsgType.PUSH_ACK, header, self._fragment_tensors(p, flat))
        if status == "duplicate":
            self.log.emit("duplicate", learner=m, fragment=p, key=item.key, version=version)
        if status in ("merged", "duplicate") and out:
            self.log.emit("ack", learner=m, fragment=p, key=item.key, version=version, bytes_out=out)

    def _pull(self, sock, frame: wire.Frame) -> None:
        p = int(frame.header["fragment"])
        if not 0 <= p < self.fmap.P:
            raise ValueError(f"fragment {p} not in 0..{self.fmap.P - 1}")
        flat, version = self.state.fragment(p)
        self._reply(sock, wire.MsgType.PULL_OK, {"version": version, "fragment": p}, self._fragment_tensors(p, flat))

    def _heartbeat(self, sock, frame: wire.Frame) -> None:
        h = frame.header
        step_s = h.get("step_s")
        self.state.heartbeat(self._learner(h), int(h.get("incarnation", -1)),
                             float(step_s) if isinstance(step_s, (int, float)) else None)
        self._reply(sock, wire.MsgType.HEARTBEAT_OK, {"versions": list(self.state.versions)})

    # ---- background work -----------------------------------------------------------
    def _merger(self) -> None:
        while not self._stopping.is_set():
            deadline = self.state.next_deadline()
            wait = _MERGER_TICK_S if deadline is None else min(_MERGER_TICK_S, deadline - self.state.clock())
            if wait > 0:
                with self.state.lock:
                    self.state.lock.wait(wait)
            self.state.merge_ready()

    def evaluate(self) -> float:
        params, versions, tokens = self.state.snapshot()
        for p, flat in enumerate(params):
            self.fmap.assign(self.eval_model, p, flat)
        loss = eval_loss(self.eval_model, self._eval_batches)
        self.log.emit("eval", loss=loss, tokens_merged=tokens, versions=versions)
        return loss

    def _evaluator(self) -> None:
        self.evaluate()
        while not self._stopping.wait(self.cfg.eval_every_s):
            self.evaluate()

    def serve_forever(self) -> None:
        workers = [threading.Thread(target=self._merger, name="merger", daemon=True),
                   threading.Thread(target=self._evaluator, name="evaluator", daemon=True)]
        for w in workers:
            w.start()
        server_thread = threading.Thread(target=self.server.serve_forever, name="serve", daemon=True)
        server_thread.start()
        try:
            self._stopping.wait()
        finally:
            self.server.shutdown()
            self.server.server_close()
            self.state.fail_all_pending("stopping")
            with self.state.lock:
                self.state.lock.notify_all()
            for w in workers:
                w.join(timeout=30)
            self.control.close()

    def stop(self) -> None:
        self._stopping.set()


def _int_or_none(x):
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trainers.syncer",
                                 description="Decoupled DiLoCo synchronizer (see docs/CONTRACTS.md)")
    ap.add_argument("--run-dir", required=True, type=Path, help="run folder (events.jsonl, state/)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--port", required=True, type=int, help="learner port (keep it across restarts)")
    ap.add_argument("--control-port", required=True, type=int, help="HTTP status/metrics port (never proxied)")
    ap.add_argument("--config", type=Path, help="trainer config JSON (default DIR/config.json)")
    ap.add_argument("--secret-file", type=Path, help="hex HMAC key (default DIR/secret)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    faulthandler.register(signal.SIGQUIT, all_threads=True)  # stack dump before a forced kill (launch.stop)
    try:
        cfg = config_mod.load(args.config or args.run_dir / "config.json")
        secret = read_secret(args.secret_file or args.run_dir / "secret")
        syncer = Syncer(cfg, args.run_dir, secret, args.host, args.port, args.control_port)
    except ChaoslocoError as e:
        print(f"syncer: {e}", file=sys.stderr)
        return e.exit_code
    reason = {"why": "stopped"}

    request_stop = SignalRelay(syncer.stop, name="stop-relay")

    def on_signal(signum, _frame):
        reason["why"] = signal.Signals(signum).name.lower()
        request_stop()  # never Event.set() in a handler: see trainers.signal_relay

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        syncer.serve_forever()
        syncer.evaluate()
    finally:
        syncer.log.emit("syncer_stop", reason=reason["why"])
        syncer.log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
