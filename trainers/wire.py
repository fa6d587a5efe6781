"""The learner ↔ synchronizer wire format: authenticated, length-prefixed frames.

A frame is::

    prefix   20 bytes  struct "!4sBBHIQ": magic b"CLOC", version, msg type, flags,
                       header length, payload length
    header   JSON object, utf-8, at most MAX_HEADER bytes
    payload  safetensors bytes (named tensors), possibly empty
    mac      32 bytes  HMAC-SHA256(secret, prefix + header + payload)

Reading checks the prefix first (magic, version, type, flags, both lengths against their
caps) so an oversized or garbage frame is refused before anything is allocated for it;
then the whole frame is authenticated with ``hmac.compare_digest`` before the header
JSON or the payload is parsed. The HMAC doubles as the checksum: a flipped bit anywhere
is ``BadAuth``, as is a frame from someone without the run's secret. Tensors travel as
safetensors (``safetensors.torch.save``/``load``): never pickle on network data.

Why not a library (gRPC, msgpack...): the frame must be readable by both a blocking
socket (learner) and asyncio (synchronizer), be authenticated, and be refusable from its
first 20 bytes; a 20-byte struct plus the stdlib hmac does all that with nothing added.

Every error a peer can cause is a ``WireError`` with a ``reason`` for the event log
(``auth``, ``oversized``, ``malformed``; ``closed``/``timeout`` for the connection), so
the synchronizer logs it, drops that connection and keeps serving.

Optional quantization of pushed fragments (``quantize``/``dequantize``, or
``pack_tensors``/``unpack_tensors`` for a whole dict):

- ``bf16``: round to nearest bfloat16: relative error per element ≤ 2⁻⁸ (8 bits of
  mantissa), NaN/Inf preserved. Half the bytes.
- ``int8``: per-tensor absmax scale s = max|t|/127, q = round(t/s): absolute error per
  element ≤ s/2 = max|t|/254. A quarter of the bytes plus one float32 scale, sent as
  the tensor ``<name>.scale``. A tensor holding NaN/Inf gets a NaN scale, so it
  dequantizes to NaN and the synchronizer's NaN check still rejects it. Push one tensor
  per parameter (not one flat fragment) where the error bound matters: the bound scales
  with the largest value in the tensor.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import hmac
import json
import socket
import struct
import time
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load, save as st_save

from trainers.config import Quantize

MAGIC = b"CLOC"
VERSION = 1
PREFIX = struct.Struct("!4sBBHIQ")
MAC_LEN = 32
MAX_HEADER = 64 * 1024
DEFAULT_MAX_PAYLOAD = 256 * 1024 * 1024


class MsgType(enum.IntEnum):
    JOIN = 1
    JOIN_OK = 2
    PUSH = 3
    PUSH_ACK = 4
    PULL = 5
    PULL_OK = 6
    HEARTBEAT = 7
    HEARTBEAT_OK = 8
    ERROR = 9


class WireError(Exception):
    """A frame that cannot be accepted; ``reason`` is the event-log reject reason."""

    reason = "malformed"


class BadMagic(WireError):
    reason = "malformed"


class BadAuth(WireError):
    reason = "auth"


class Oversized(WireError):
    reason = "oversized"


class Malformed(WireError):
    reason = "malformed"


class Truncated(WireError):
    reason = "malformed"


class Closed(WireError):
    """The peer closed the connection cleanly between frames."""

    reason = "closed"


class WireTimeout(WireError):
    reason = "timeout"


@dataclasses.dataclass(frozen=True)
class Frame:
    msg_type: MsgType
    header: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    nbytes: int  # size on the wire, for bytes_in / bytes_out accounting
    flags: int = 0


def encode(msg_type: MsgType, header: Mapping[str, Any],
           tensors: Mapping[str, torch.Tensor] | None, secret: bytes, *, flags: int = 0) -> bytes:
    """One complete frame. Tensors are saved as safetensors (made contiguous)."""
    head = json.dumps(dict(header), separators=(",", ":"), allow_nan=False).encode()
    if len(head) > MAX_HEADER:
        raise Oversized(f"header of {len(head)} bytes exceeds {MAX_HEADER}")
    payload = st_save({k: v.detach().contiguous() for k, v in tensors.items()}) if tensors else b""
    prefix = PREFIX.pack(MAGIC, VERSION, int(MsgType(msg_type)), flags, len(head), len(payload))
    mac = hmac.new(secret, prefix, hashlib.sha256)
    mac.update(head)
    mac.update(payload)
    return b"".join((prefix, head, payload, mac.digest()))


def parse_prefix(prefix: bytes, max_payload: int) -> tuple[MsgType, int, int, int]:
    """Checks the fixed prefix; returns (type, flags, header length, payload length)."""
    if len(prefix) < PREFIX.size:
        raise Truncated(f"frame prefix of {len(prefix)} bytes, need {PREFIX.size}")
    magic, version, mtype, flags, head_len, payload_len = PREFIX.unpack(prefix[:PREFIX.size])
    if magic != MAGIC:
        raise BadMagic(f"bad magic {magic!r}")
    if version != VERSION:
        raise Malformed(f"protocol version {version}, this build speaks {VERSION}")
    try:
        msg_type = MsgType(mtype)
    except ValueError:
        raise Malformed(f"unknown message type {mtype}") from None
    if head_len > MAX_HEADER:
        raise Oversized(f"header length {head_len} exceeds {MAX_HEADER}")
    if payload_len > max_payload:
        raise Oversized(f"payload length {payload_len} exceeds {max_payload}")
    return msg_type, flags, head_len, payload_len


def _finish(prefix: bytes, rest: bytes | bytearray | memoryview, secret: bytes, msg_type: MsgType, flags: int,
            head_len: int, payload_len: int) -> Frame:
    body_end = head_len + payload_len
    view = memoryview(rest)  # slices without copying a payload of many megabytes
    mac = hmac.new(secret, prefix, hashlib.sha256)
    mac.update(view[:body_end])
    if not hmac.compare_digest(mac.digest(), bytes(view[body_end:body_end + MAC_LEN])):
        raise BadAuth("frame authentication failed (wrong secret or corrupted frame)")
    try:
        header = json.loads(bytes(view[:head_len]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Malformed(f"header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise Malformed(f"header is a JSON {type(header).__name__}, not an object")
    tensors: dict[str, torch.Tensor] = {}
    if payload_len:
        try:
            tensors = st_load(bytes(view[head_len:body_end]))
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise Malformed(f"payload is not safetensors: {e}") from e
    return Frame(msg_type, header, tensors, PREFIX.size + body_end + MAC_LEN, flags)


def decode(buf: bytes, secret: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Frame:
    """Decodes exactly one frame from ``buf`` (no trailing bytes allowed)."""
    msg_type, flags, head_len, payload_len = parse_prefix(buf, max_payload)
    want = PREFIX.size + head_len + payload_len + MAC_LEN
    if len(buf) < want:
        raise Truncated(f"frame of {len(buf)} bytes, its prefix announces {want}")
    if len(buf) > want:
        raise Malformed(f"{len(buf) - want} bytes after the end of the frame")
    view = memoryview(buf)
    return _finish(bytes(view[:PREFIX.size]), view[PREFIX.size:], secret,
                   msg_type, flags, head_len, payload_len)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None, *, first: bool) -> bytearray:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WireTimeout(f"timed out with {len(buf)} of {n} bytes read")
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except socket.timeout:
            raise WireTimeout(f"timed out with {len(buf)} of {n} bytes read") from None
        if not chunk:
            if first and not buf:
                raise Closed("connection closed by peer")
            raise Truncated(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_frame(sock: socket.socket, secret: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD,
               timeout_s: float | None = None) -> Frame:
    """Reads one frame from a blocking socket within ``timeout_s`` (None: no limit)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    prefix = _recv_exact(sock, PREFIX.size, deadline, first=True)
    msg_type, flags, head_len, payload_len = parse_prefix(prefix, max_payload)
    rest = _recv_exact(sock, head_len + payload_len + MAC_LEN, deadline, first=False)
    return _finish(bytes(prefix), rest, secret, msg_type, flags, head_len, payload_len)


def write_frame(sock: socket.socket, msg_type: MsgType, header: Mapping[str, Any],
                tensors: Mapping[str, torch.Tensor] | None, secret: bytes,
                timeout_s: float | None = None) -> int:
    """Sends one frame; returns its size in bytes."""
    data = encode(msg_type, header, tensors, secret)
    sock.settimeout(timeout_s)
    try:
        sock.sendall(data)
    except socket.timeout:
        raise WireTimeout(f"timed out sending a {len(data)}-byte frame") from None
    return len(data)


async def read_frame_async(reader: asyncio.StreamReader, secret: bytes,
                           max_payload: int = DEFAULT_MAX_PAYLOAD) -> Frame:
    """Reads one frame from an asyncio stream (wrap in ``asyncio.wait_for`` to bound it)."""
    try:
        prefix = await reader.readexactly(PREFIX.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise Closed("connection closed by peer") from None
        raise Truncated(f"connection closed after {len(e.partial)} bytes of the prefix") from None
    msg_type, flags, head_len, payload_len = parse_prefix(prefix, max_payload)
    try:
        rest = await reader.readexactly(head_len + payload_len + MAC_LEN)
    except asyncio.IncompleteReadError as e:
        raise Truncated(f"connection closed after {len(e.partial)} bytes of the frame body") from None
    return _finish(prefix, rest, secret, msg_type, flags, head_len, payload_len)


async def write_frame_async(writer: asyncio.StreamWriter, msg_type: MsgType,
                            header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor] | None,
                            secret: bytes) -> int:
    data = encode(msg_type, header, tensors, secret)
    writer.write(data)
    await writer.drain()
    return len(data)


# --- quantization of pushed fragments ---------------------------------------------

def quantize(t: torch.Tensor, mode: Quantize) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(data, scale): scale is a float32 scalar tensor for int8, None otherwise."""
    mode = Quantize(mode)
    t = t.detach().float()
    if mode is Quantize.NONE:
        return t, None
    if mode is Quantize.BF16:
        return t.to(torch.bfloat16), None
    if not bool(torch.isfinite(t).all()):
        return torch.zeros_like(t, dtype=torch.int8), torch.tensor(float("nan"))
    absmax = float(t.abs().max()) if t.numel() else 0.0
    scale = absmax / 127.0 if absmax > 0 else 1.0
    q = torch.round(t / scale).clamp_(-127, 127).to(torch.int8)
    return q, torch.tensor(scale, dtype=torch.float32)


def dequantize(data: torch.Tensor, scale: torch.Tensor | None, mode: Quantize) -> torch.Tensor:
    mode = Quantize(mode)
    if mode is Quantize.INT8:
        if scale is None or data.dtype != torch.int8:
            raise Malformed("int8 tensor without its scale, or not int8")
        return data.float() * scale.float()
    expected = torch.bfloat16 if mode is Quantize.BF16 else torch.float32
    if data.dtype != expected:
        raise Malformed(f"tensor of dtype {data.dtype}, quantization {mode.value} expects {expected}")
    return data.float()


def pack_tensors(tensors: Mapping[str, torch.Tensor], mode: Quantize) -> dict[str, torch.Tensor]:
    """Quantizes every tensor; int8 scales go along as ``<name>.scale``."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        data, scale = quantize(t, mode)
        out[name] = data
        if scale is not None:
            out[f"{name}.scale"] = scale
    return out


def unpack_tensors(tensors: Mapping[str, torch.Tensor], mode: Quantize) -> dict[str, torch.Tensor]:
    """Inverse of ``pack_tensors``: float32 tensors by their original names."""
    mode = Quantize(mode)
    out = {}
    for name, t in tensors.items():
        if mode is Quantize.INT8 and name.endswith(".scale"):
            continue
        out[name] = dequantize(t, tensors.get(f"{name}.scale"), mode)
    return out
