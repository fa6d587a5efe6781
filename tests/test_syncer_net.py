"""The synchronizer as a real process over real TCP: refusals with a logged reason while
it keeps serving, a retried push after a reset connection merged once, and the
control port."""
from __future__ import annotations

import socket
import threading
import urllib.request

import pytest
import torch

from tests.trainer_procs import Cluster
from trainers import wire
from trainers.client import RpcError, pack_fragment, rpc, unpack_fragment
from trainers.config import Quantize, TrainerConfig
from trainers.fragments import FragmentMap
from trainers.model import build_model
from trainers.sender import PushJob, Sender
from trainers.store import DurableStore


@pytest.fixture
def cluster(tmp_path):
    cfg = TrainerConfig(learners=2, quorum=1, fragments=2, eval_every_s=60.0, rpc_timeout_s=5.0)
    c = Cluster(tmp_path / "run", cfg)
    try:
        c.start_syncer()
        yield c
    finally:
        c.close()


def _fmap(cfg) -> FragmentMap:
    return FragmentMap.from_model(build_model(cfg.preset, cfg.seq_len, cfg.seed), cfg.fragments)


def _join(c: Cluster, learner: int):
    frame, _ = rpc(c.addr, wire.MsgType.JOIN, {"learner": learner}, None, c.secret, timeout_s=10)
    return frame.header


def _push_header(learner, inc, p, key, tokens=512):
    return {"learner": learner, "incarnation": inc, "fragment": p, "key": key, "base_version": 0,
            "tokens": tokens, "steps": 1, "range": [0, tokens], "quantize": "none"}


def _rejects(c: Cluster) -> list[str]:
    return [e["reason"] for e in c.events() if e["ev"] == "reject"]


def test_bad_frames_are_rejected_with_reason_and_service_keeps_serving(cluster):
    c = cluster
    fmap = _fmap(c.cfg)
    h = _join(c, 0)
    frag = fmap.flatten(build_model("tiny", 64, 0), 0)
    tensors = pack_fragment(fmap, 0, frag + 0.001, Quantize.NONE)
    with pytest.raises(RpcError) as e:
        rpc(c.addr, wire.MsgType.PUSH, _push_header(0, h["incarnation"], 0, "0-0-0-0"), tensors,
            b"x" * 32, timeout_s=10)
    assert e.value.reason in ("auth", "closed")  # our ERROR reply fails *our* wrong key
    with socket.create_connection(c.addr, timeout=10) as s:  # garbage bytes
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\0" * 16)
        s.recv(1024)
    with socket.create_connection(c.addr, timeout=10) as s:  # a 4 GB payload announced
        s.sendall(wire.PREFIX.pack(wire.MAGIC, wire.VERSION, int(wire.MsgType.PUSH), 0, 2, 1 << 32))
        s.recv(1024)
    nan = frag.clone()
    nan[3] = float("nan")
    reply, _ = rpc(c.addr, wire.MsgType.PUSH, _push_header(0, h["incarnation"], 0, "0-0-0-1"),
                   pack_fragment(fmap, 0, nan, Quantize.NONE), c.secret, timeout_s=10)
    assert (reply.header["status"], reply.header["reason"]) == ("rejected", "nan")
    c.wait(lambda e: e.get("ev") == "reject" and e.get("reason") == "nan", what="nan reject", timeout_s=10)
    assert _rejects(c) == ["auth", "malformed", "oversized", "nan"]
    # Nothing reached the global model, and the service still answers.
    assert c.status()["versions"] == [0, 0] and c.status()["outer_updates"] == 0
    assert _join(c, 1)["versions"] == [0, 0]
    assert not [e for e in c.events() if e["ev"] == "merge"]
    # A good push from a joined learner is merged (K=1): the refusals did not wedge it.
    reply, _ = rpc(c.addr, wire.MsgType.PUSH, _push_header(0, h["incarnation"], 0, "0-0-0-2"), tensors,
                   c.secret, timeout_s=10)
    assert (reply.header["status"], reply.header["version"]) == ("merged", 1)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{c.control_port}/metrics", timeout=10).read().decode()
    assert "chaosloco_outer_updates 1.0" in metrics
    assert c.status()["learners"]["0"]["tokens_merged"] == round(512 * fmap.fraction(0))


class DropFirstReply:
    """A TCP relay in front of the synchronizer that forwards the first connection's
    request but closes the client side before the reply: a reset after the push was
    received (and merged), as a flaky link does."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = self.sock.getsockname()
        self.connections = 0
        self.dropped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._relay, args=(client, self.connections == 1), daemon=True).start()

    def _relay(self, client: socket.socket, drop: bool) -> None:
        with client, socket.create_connection(self.upstream, timeout=30) as up:
            def pump_up() -> None:
                try:
                    while data := client.recv(65536):
                        up.sendall(data)
                except OSError:
                    pass
            threading.Thread(target=pump_up, daemon=True).start()
            try:
                while data := up.recv(65536):  # the synchronizer closes after its reply
                    if not drop:
                        client.sendall(data)
            except OSError:
                pass
            if drop:
                self.dropped.set()

    def close(self) -> None:
        self.sock.close()


def test_retried_push_after_reset_connection_is_merged_once(cluster):
    c = cluster
    fmap = _fmap(c.cfg)
    inc = _join(c, 0)["incarnation"]
    frag = fmap.flatten(build_model("tiny", 64, 0), 1) + 0.001
    relay = DropFirstReply(c.addr)
    retries = []
    sender = Sender(relay.addr, c.secret, 5.0, lambda op, n, err: retries.append((op, n, err)), seed=1)
    try:
        key = f"0-{inc}-1-0"
        sender.submit(PushJob(1, key, _push_header(0, inc, 1, key), pack_fragment(fmap, 1, frag, Quantize.NONE),
                              frag, step=1, range=(0, 512)))
        result = sender.results.get(timeout=60)
    finally:
        sender.join_all(1.0)
        relay.close()
    assert relay.dropped.is_set() and retries and retries[0][0] == "push"
    assert result.status == "duplicate" and result.version == 1
    merges = [e for e in c.events() if e["ev"] == "merge"]
    assert [[x["key"] for x in m["contributors"]] for m in merges] == [[key]]
    assert [e["key"] for e in c.events() if e["ev"] == "duplicate"] == [key]
    assert c.status()["versions"] == [0, 1]
    # The merge is durable with its key: a crash cannot make the retry merge again.
    state = DurableStore(c.dir).load_fragment(1)
    assert state.version == 1 and key in state.merged_keys
    assert torch.allclose(unpack_fragment(fmap, 1, result.frame.tensors, Quantize.NONE), state.params)
