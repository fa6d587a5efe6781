"""A learner: the inner AdamW loop, syncing fragments with the synchronizer (SPEC §1).

``python -m trainers.learner --run-dir DIR --id I --syncer HOST:PORT [--secret-file F]``

The same code runs every mode, so comparisons are fair:

- ``decoupled``: fragment p is pushed when due (``fragments.due_fragments``, staggered);
  the push runs in a background thread (``trainers.sender``) and the inner loop goes on.
  The reply (PUSH_ACK, sent after the merge) carries the merged fragment, applied at
  the first step boundary after it arrives (logged ``apply`` with ``lag_steps``; with
  τ = ``overlap_steps`` steps of compute to hide it behind). With ``overlap_steps = 0``
  the learner waits for the reply before its next step (used by the H=1 anchor test).
- ``diloco`` (whole model every H steps) and ``ddp`` (every step): the learner waits for
  the reply (the synchronizer answers after everyone's push: a barrier).

Decisions:

- **Apply** keeps the local progress made since the pushed snapshot:
  ``θ_p ← θ_now + α·(Θ_new − θ_snapshot)``; α = ``blend_alpha`` (1: exactly
  Θ_new + (θ_now − θ_snapshot); in blocking modes θ_now = θ_snapshot, so it overwrites).
  A version not newer than the one applied is never applied (SPEC §3 item 2). The
  inner AdamW state persists across syncs.
- **Data accounting**: fragment p's push covers the shard range [since_p, cursor);
  since_p advances when the push is acked (merged/duplicate) or refused (then the range
  is logged ``discard`` and p is resynced from the fragment in the reply). After a
  (re)join the learner resumes at ``resume_cursor = min(since)`` with the synchronizer's
  ``since`` per fragment, so no range is merged twice and none is skipped.
- **Unreachable synchronizer**: the join is retried with backoff until it answers;
  afterwards training never stops for the network in ``decoupled`` mode (a due
  fragment whose previous push is still in flight is skipped, its counters keep
  accumulating), and pushes go through when the link returns.
- **Signals**: SIGTERM stops after the current step and flushes in-flight pushes for at
  most ``rpc_timeout_s``; SIGUSR1 / SIGUSR2 corrupt the next push with NaN / a huge norm
  (fault injection, logged ``corrupt``; only the copy sent is corrupted).
"""
from __future__ import annotations

import argparse
import os
import queue
import random
import faulthandler
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from harness.errors import ChaoslocoError
from trainers import config as config_mod
from trainers import wire
from trainers.client import RpcError, pack_fragment, rpc, unpack_fragment
from trainers.config import Mode
from trainers.data import Shard, load_corpus
from trainers.events import EventLog
from trainers.fragments import FragmentMap, due_fragments
from trainers.inner_opt import AdamW
from trainers.model import build_model
from trainers.sender import PushJob, PushResult, Sender, backoff_s
from trainers.signal_relay import SignalRelay
from trainers.syncer import read_secret
from trainers.syncer_state import effective_schedule

PROGRESS_EVERY_S = 1.0


class Learner:
    def __init__(self, run_dir: Path, learner_id: int, addr: tuple[str, int], secret: bytes, *,
                 max_steps: int | None = None) -> None:
        torch.set_num_threads(1)
        self.run_dir, self.id, self.addr, self.secret = run_dir, learner_id, addr, secret
        self.max_steps = max_steps
        self.log = EventLog(run_dir / "events.jsonl", f"learner-{learner_id}")
        self.stop_event = threading.Event()
        self.corrupt_next: str | None = None
        self.rng = random.Random(os.getpid() ^ learner_id)
        self.step_s: float | None = None

    # ---- join --------------------------------------------------------------------
    def _retry_log(self, op: str, attempt: int, error: str) -> None:
        self.log.emit("retry", learner=self.id, op=op, attempt=attempt, error=error)

    def join(self) -> bool:
        attempt = 0
        while not self.stop_event.is_set():
            try:
                frame, _ = rpc(self.addr, wire.MsgType.JOIN, {"learner": self.id}, None, self.secret,
                               timeout_s=30.0)
                break
            except RpcError as e:
                attempt += 1
                self._retry_log("join", attempt, str(e)[:200])
                if e.reason in ("auth", "malformed"):
                    raise
                self.stop_event.wait(backoff_s(attempt, self.rng))
        else:
            return False
        h = frame.header
        self.cfg = config_mod.from_dict(h["config"], source="join reply")
        cfg = self.cfg
        self.incarnation = int(h["incarnation"])
        self.model = build_model(cfg.preset, cfg.seq_len, cfg.seed)
        P, self.H = effective_schedule(cfg)
        self.fmap = FragmentMap.from_model(self.model, P)
        for p in range(self.fmap.P):
            self.fmap.assign(self.model, p, unpack_fragment(self.fmap, p, frame.tensors, config_mod.Quantize.NONE,
                                                                prefix=f"{p}/"))
        self.versions = [int(v) for v in h["versions"]]
        self.since = [int(s) for s in h["since"]]
        self.cursor = int(h["resume_cursor"])
        self.inflight: set[int] = set()
        self.rejoin_needed = False
        self.seq = 0
        # not torch.optim.AdamW: its torch._dynamo import doubled a rejoin (trainers.inner_opt)
        self.opt = AdamW(self.model.parameters(), lr=cfg.inner_lr, weight_decay=cfg.weight_decay)
        self.shard = Shard(load_corpus(cfg.data), self.id, cfg.learners, cfg.seed)
        self.tokens_per_step = cfg.batch_size * cfg.seq_len
        self.blocking = cfg.mode is not Mode.DECOUPLED or cfg.overlap_steps == 0
        self.sender = Sender(self.addr, self.secret, cfg.rpc_timeout_s, self._retry_log,
                             seed=self.rng.randrange(1 << 30))
        # Building the model and reading the corpus took seconds in which the global
        # model moved on: pull the fragments again so the first pushes are not stale.
        self._resync_all()
        self.log.emit("joined", learner=self.id, incarnation=self.incarnation,
                      resume_cursor=self.cursor, versions=list(self.versions))
        return True

    # ---- sync ----------------------------------------------------------------------
    def _resync_all(self) -> None:
        for p in range(self.fmap.P):
            try:
                frame, _ = rpc(self.addr, wire.MsgType.PULL, {"learner": self.id, "fragment": p}, None,
                               self.secret, timeout_s=self.cfg.rpc_timeout_s)
            except RpcError as e:
                self._retry_log("pull", 1, str(e)[:200])
                return  # the join's fragments stand; pushes will resync on reply
            version = int(frame.header["version"])
            if version > self.versions[p]:
                self.fmap.assign(self.model, p, unpack_fragment(self.fmap, p, frame.tensors, config_mod.Quantize.NONE))
                self.versions[p] = version

    def _push(self, p: int, step: int) -> None:
        if p in self.inflight or self.cursor <= self.since[p]:
            return  # previous push still in flight (counters keep accumulating) / nothing new
        snapshot = self.fmap.flatten(self.model, p)
        sent = snapshot
        if self.corrupt_next is not None:
            kind, self.corrupt_next = self.corrupt_next, None
            sent = snapshot.clone()
            if kind == "nan":
                sent[0] = float("nan")
            else:
                sent = sent * 1e6 + 1e3
            self.log.emit("corrupt", learner=self.id, fragment=p, kind=kind)
        rng = (self.since[p], self.cursor)
        tokens = rng[1] - rng[0]
        key = f"{self.id}-{self.incarnation}-{p}-{self.seq}"
        self.seq += 1
        header = {"learner": self.id, "incarnation": self.incarnation, "fragment": p, "key": key,
                  "base_version": self.versions[p], "tokens": tokens,
                  "steps": max(1, tokens // self.tokens_per_step), "range": list(rng),
                  "quantize": self.cfg.quantize.value}
        tensors = pack_fragment(self.fmap, p, sent, self.cfg.quantize)
        self.inflight.add(p)
        self.sender.submit(PushJob(p, key, header, tensors, snapshot, step, rng))

    def _apply(self, res: PushResult, step: int) -> None:
        job, p = res.job, res.job.fragment
        self.inflight.discard(p)
        if res.status == "stopped":
            return
        if res.status not in ("merged", "duplicate"):
            self.log.emit("discard", learner=self.id, fragment=p, range=list(job.range), reason=res.reason)
        if res.reason == "rolled_back":
            self.rejoin_needed = True  # ddp rolled back to a checkpoint: start over from it
            return
        self.since[p] = max(self.since[p], job.range[1])
        current = res.current_version
        if res.frame is None or current is None or current <= self.versions[p]:
            return  # nothing newer to apply (an ERROR refusal carries no fragment)
        new = unpack_fragment(self.fmap, p, res.frame.tensors, config_mod.Quantize.NONE)
        local = self.fmap.flatten(self.model, p)
        self.fmap.assign(self.model, p, local + self.cfg.blend_alpha * (new - job.snapshot))
        self.versions[p] = int(current)
        self.log.emit("apply", learner=self.id, fragment=p, version=int(current), lag_steps=step - job.step)

    def _drain(self, step: int, wait_for: set[int] | None = None) -> None:
        """Applies every reply that arrived; with ``wait_for``, blocks until those
        fragments' pushes have all answered (synchronous modes)."""
        while True:
            block = bool(wait_for and (wait_for & self.inflight))
            try:
                res = self.sender.results.get(timeout=0.1) if block else self.sender.results.get_nowait()
            except queue.Empty:
                if block and not self.stop_event.is_set():
                    continue
                return
            self._apply(res, step)

    # ---- background heartbeats -----------------------------------------------------
    def _heartbeats(self) -> None:
        while not self.stop_event.wait(self.cfg.heartbeat_s):
            try:
                rpc(self.addr, wire.MsgType.HEARTBEAT, {"learner": self.id, "incarnation": self.incarnation,
                                                        "step_s": self.step_s}, None, self.secret,
                    timeout_s=min(self.cfg.rpc_timeout_s, 5.0))
            except RpcError:
                pass  # liveness only; pushes carry their own retries

    # ---- the loop ----------------------------------------------------------------
    def run(self) -> str:
        self.log.emit("learner_start", learner=self.id, pid=os.getpid())
        if not self.join():
            return "stopped before joining"
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
        self.model.train()
        step, window_start, window_tokens, window_compute = 0, time.monotonic(), 0, 0.0
        loss_val = float("nan")
        while not self.stop_event.is_set() and (self.max_steps is None or step < self.max_steps):
            t0 = time.monotonic()
            x, y = self.shard.batch_at(self.cursor, self.cfg.batch_size, self.cfg.seq_len)
            _, loss = self.model(x, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            dt = time.monotonic() - t0
            self.step_s = dt if self.step_s is None else 0.8 * self.step_s + 0.2 * dt
            step += 1
            self.cursor += self.tokens_per_step
            window_tokens += self.tokens_per_step
            window_compute += dt
            loss_val = float(loss.detach())
            if step == 1:
                self.log.emit("first_step", learner=self.id, incarnation=self.incarnation)
            self._drain(step)
            due = due_fragments(step, self.fmap.P, self.H)
            for p in due:
                self._push(p, step)
            if self.blocking and due:
                self._drain(step, wait_for=set(due))
            if self.rejoin_needed:
                self.sender.join_all(0.0)
                if not self.join():
                    break
                step = 0  # the schedule restarts with the rejoined model (first_step again)
                continue
            now = time.monotonic()
            if now - window_start >= PROGRESS_EVERY_S:
                self.log.emit("progress", learner=self.id, incarnation=self.incarnation, step=step,
                              cursor=self.cursor, tokens=window_tokens, compute_s=window_compute,
                              wall_s=now - window_start, loss=loss_val)
                window_start, window_tokens, window_compute = now, 0, 0.0
        # Graceful stop: let in-flight pushes finish (bounded), apply what came back.
        self.sender.join_all(self.cfg.rpc_timeout_s)
        self._drain(step)
        self.stop_event.set()
        return "max_steps" if self.max_steps is not None and step >= self.max_steps else "stopped"


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trainers.learner",
                                 description="Decoupled DiLoCo learner (see docs/CONTRACTS.md)")
    ap.add_argument("--run-dir", required=True, type=Path, help="run folder (events.jsonl)")
    ap.add_argument("--id", required=True, type=int, help="learner id, 0..N-1")
    ap.add_argument("--syncer", required=True, type=_addr, help="synchronizer HOST:PORT (or its proxy)")
    ap.add_argument("--secret-file", type=Path, help="hex HMAC key (default DIR/secret)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many inner steps")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    faulthandler.register(signal.SIGQUIT, all_threads=True)  # stack dump before a forced kill (launch.stop)
    try:
        secret = read_secret(args.secret_file or args.run_dir / "secret")
    except ChaoslocoError as e:
        print(f"learner: {e}", file=sys.stderr)
        return e.exit_code
    learner = Learner(args.run_dir, args.id, args.syncer, secret, max_steps=args.max_steps)

    request_stop = SignalRelay(learner.stop_event.set, name="stop-relay")

    def on_stop(signum, _frame):
        request_stop()  # never Event.set() in a handler: see trainers.signal_relay

    def on_corrupt(signum, _frame):
        learner.corrupt_next = "nan" if signum == signal.SIGUSR1 else "norm"

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_corrupt)
    signal.signal(signal.SIGUSR2, on_corrupt)
    reason = "error"
    try:
        reason = learner.run()
    except RpcError as e:
        reason = f"refused: {e}"
        print(f"learner: {e}", file=sys.stderr)
        return 3
    finally:
        learner.log.emit("learner_stop", learner=learner.id, reason=reason)
        learner.log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
