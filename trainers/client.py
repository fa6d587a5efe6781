"""One RPC to the synchronizer, and how fragments travel in frames.

Design: one TCP connection per RPC (connect, send one frame, read one reply, close),
each bounded by a timeout. Nothing is multiplexed on a long-lived connection, so a
reset, a blackhole or a synchronizer restart costs exactly the RPC in flight, and the
caller's retry (with the same idempotency key for a push) is the only recovery path.

Fragments travel as one tensor per model parameter (named by the parameter), so int8
quantization gets a scale per tensor (``wire.pack_tensors``); the receiver checks that
exactly the fragment's names and sizes arrived before flattening them.
"""
from __future__ import annotations

import math
import socket
from typing import Any, Mapping

import torch

from trainers import wire
from trainers.config import Quantize
from trainers.fragments import FragmentMap


class RpcError(Exception):
    """An RPC that did not complete: ``reason`` is ``connect``, ``timeout``, ``closed``,
    a wire reason, or the synchronizer's ERROR reply reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def pack_fragment(fmap: FragmentMap, p: int, flat: torch.Tensor, mode: Quantize,
                  prefix: str = "") -> dict[str, torch.Tensor]:
    """Fragment p as named tensors (``prefix`` + parameter name: a join carries all)."""
    named, offset = {}, 0
    for name, shape in zip(fmap.names[p], fmap.shapes[p]):
        k = math.prod(shape)
        named[prefix + name] = flat[offset:offset + k]
        offset += k
    return wire.pack_tensors(named, mode)


def unpack_fragment(fmap: FragmentMap, p: int, tensors: Mapping[str, torch.Tensor], mode: Quantize,
                    prefix: str = "") -> torch.Tensor:
    """The flat fragment p from a frame's tensors; raises ``wire.Malformed`` when the
    names or sizes do not match the fragment."""
    if prefix:
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    named = wire.unpack_tensors(tensors, mode)
    if set(named) != set(fmap.names[p]):
        raise wire.Malformed(f"fragment {p}: tensors {sorted(named)[:4]}..., expected {list(fmap.names[p])[:4]}...")
    parts = []
    for name, shape in zip(fmap.names[p], fmap.shapes[p]):
        t = named[name]
        if t.numel() != math.prod(shape):
            raise wire.Malformed(f"fragment {p}: {name} has {t.numel()} elements, expected {math.prod(shape)}")
        parts.append(t.reshape(-1).float())
    return torch.cat(parts)


def rpc(addr: tuple[str, int], msg_type: wire.MsgType, header: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor] | None, secret: bytes, *, timeout_s: float,
        max_payload: int = wire.DEFAULT_MAX_PAYLOAD) -> tuple[wire.Frame, int]:
    """Sends one request, returns (reply frame, request bytes). Raises RpcError."""
    try:
        sock = socket.create_connection(addr, timeout=timeout_s)
    except OSError as e:
        raise RpcError("connect", str(e)) from e
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = wire.write_frame(sock, msg_type, header, tensors, secret, timeout_s=timeout_s)
        reply = wire.read_frame(sock, secret, max_payload, timeout_s=timeout_s)
    except wire.WireError as e:
        raise RpcError(e.reason, str(e)) from e
    except OSError as e:
        raise RpcError("closed", str(e)) from e
    finally:
        sock.close()
    if reply.msg_type is wire.MsgType.ERROR:
        raise RpcError(str(reply.header.get("reason", "error")), str(reply.header.get("message", "")))
    return reply, sent
