"""Wire frames: round trips, authentication (tampering, wrong secret), truncation,
oversize refused from the prefix alone, over real TCP (blocking and asyncio), and
quantization error bounds."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time

import pytest
import torch

from trainers.config import Quantize
from trainers.wire import (MAX_HEADER, PREFIX, BadAuth, BadMagic, Closed, Malformed, MsgType,
                           Oversized, Truncated, WireError, WireTimeout, decode, dequantize, encode,
                           pack_tensors, quantize, read_frame, read_frame_async, unpack_tensors,
                           write_frame, write_frame_async)

SECRET = b"s" * 32


def tensors():
    gen = torch.Generator().manual_seed(0)
    return {"frag.3": torch.randn(50, generator=gen), "ids": torch.arange(4),
            "q": torch.tensor([1, -2], dtype=torch.int8), "h": torch.ones(3, dtype=torch.bfloat16)}


def forged(prefix_fields=None, head=b"{}", payload=b"", secret=SECRET):
    """A frame built by hand (valid HMAC) to reach the checks after authentication."""
    fields = prefix_fields or (b"CLOC", 1, int(MsgType.PUSH), 0, len(head), len(payload))
    prefix = PREFIX.pack(*fields)
    return prefix + head + payload + hmac.new(secret, prefix + head + payload, hashlib.sha256).digest()


def test_round_trip_header_and_tensors():
    buf = encode(MsgType.PUSH, {"learner": 2, "key": "2:0:17", "range": [0, 512]}, tensors(), SECRET)
    frame = decode(buf, SECRET)
    assert frame.msg_type is MsgType.PUSH
    assert frame.header == {"learner": 2, "key": "2:0:17", "range": [0, 512]}
    for name, t in tensors().items():
        assert frame.tensors[name].dtype == t.dtype and torch.equal(frame.tensors[name], t)
    assert frame.nbytes == len(buf)


@pytest.mark.parametrize("msg_type", list(MsgType))
def test_every_message_type_without_payload(msg_type):
    frame = decode(encode(msg_type, {"n": 1}, None, SECRET), SECRET)
    assert frame.msg_type is msg_type and frame.tensors == {} and frame.header == {"n": 1}


def test_every_flipped_bit_is_detected():
    buf = encode(MsgType.PUSH, {"a": 1}, {"x": torch.ones(2)}, SECRET)
    for i in range(len(buf)):
        for bit in (0, 7):
            bad = bytearray(buf)
            bad[i] ^= 1 << bit
            with pytest.raises(WireError) as info:
                decode(bytes(bad), SECRET)
            if i >= PREFIX.size:  # header, payload, mac: only the HMAC can notice
                assert isinstance(info.value, BadAuth) and info.value.reason == "auth"


def test_wrong_secret_is_bad_auth():
    with pytest.raises(BadAuth):
        decode(encode(MsgType.JOIN, {}, None, SECRET), b"other secret")


def test_every_truncation_is_detected():
    buf = encode(MsgType.PULL_OK, {"v": [1, 2]}, {"x": torch.zeros(8)}, SECRET)
    for k in range(len(buf)):
        with pytest.raises(Truncated):
            decode(buf[:k], SECRET)
    with pytest.raises(Malformed, match="after the end"):
        decode(buf + b"\0", SECRET)


def test_prefix_checks():
    good = encode(MsgType.JOIN, {}, None, SECRET)
    with pytest.raises(BadMagic):
        decode(b"HTTP" + good[4:], SECRET)
    with pytest.raises(Malformed, match="version"):
        decode(forged((b"CLOC", 9, 1, 0, 2, 0)), SECRET)
    with pytest.raises(Malformed, match="message type"):
        decode(forged((b"CLOC", 1, 99, 0, 2, 0)), SECRET)
    with pytest.raises(Oversized) as info:
        decode(forged((b"CLOC", 1, 1, 0, MAX_HEADER + 1, 0)), SECRET)
    assert info.value.reason == "oversized"
    with pytest.raises(Oversized):
        decode(encode(MsgType.PUSH, {}, {"x": torch.zeros(1000)}, SECRET), SECRET, max_payload=1000)


def test_authenticated_garbage_is_malformed():
    with pytest.raises(Malformed, match="not JSON"):
        decode(forged(head=b"{not json"), SECRET)
    with pytest.raises(Malformed, match="not an object"):
        decode(forged(head=b"[1,2]"), SECRET)
    with pytest.raises(Malformed, match="safetensors"):
        decode(forged(payload=b"\x08\0\0\0\0\0\0\0not-json"), SECRET)


def test_header_size_is_capped_on_encode():
    with pytest.raises(Oversized):
        encode(MsgType.JOIN, {"x": "a" * MAX_HEADER}, None, SECRET)


# --- over real sockets -------------------------------------------------------------

@pytest.fixture
def tcp_pair():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname(), timeout=5)
    conn, _ = server.accept()
    server.close()
    yield client, conn
    client.close()
    conn.close()


def test_frames_over_tcp_back_to_back(tcp_pair):
    client, conn = tcp_pair
    big = {"x": torch.randn(300_000)}  # 1.2 MB: many recv calls
    sent = [write_frame(client, MsgType.PUSH, {"i": i}, big if i == 1 else None, SECRET, timeout_s=5)
            for i in range(3)]
    frames = [read_frame(conn, SECRET, timeout_s=5) for _ in range(3)]
    assert [f.header["i"] for f in frames] == [0, 1, 2]
    assert [f.nbytes for f in frames] == sent
    assert torch.equal(frames[1].tensors["x"], big["x"])


def test_oversized_refused_from_the_prefix_without_waiting_for_the_body(tcp_pair):
    client, conn = tcp_pair
    client.sendall(PREFIX.pack(b"CLOC", 1, int(MsgType.PUSH), 0, 2, 1 << 40))  # claims 1 TiB
    start = time.monotonic()
    with pytest.raises(Oversized):
        read_frame(conn, SECRET, max_payload=1 << 20, timeout_s=30)
    assert time.monotonic() - start < 5.0  # refused at once: did not wait 30 s for the body


def test_half_a_frame_times_out_within_the_bound(tcp_pair):
    client, conn = tcp_pair
    buf = encode(MsgType.PUSH, {}, {"x": torch.ones(10)}, SECRET)
    client.sendall(buf[:30])
    start = time.monotonic()
    with pytest.raises(WireTimeout):
        read_frame(conn, SECRET, timeout_s=0.3)
    assert 0.25 <= time.monotonic() - start < 5.0  # generous: the machine may be busy


def test_close_between_frames_and_mid_frame(tcp_pair):
    client, conn = tcp_pair
    buf = encode(MsgType.HEARTBEAT, {}, None, SECRET)
    client.sendall(buf + buf[:10])
    client.close()
    assert read_frame(conn, SECRET, timeout_s=5).msg_type is MsgType.HEARTBEAT
    with pytest.raises(Truncated):
        read_frame(conn, SECRET, timeout_s=5)


def test_clean_close_is_closed(tcp_pair):
    client, conn = tcp_pair
    client.close()
    with pytest.raises(Closed):
        read_frame(conn, SECRET, timeout_s=5)


def test_asyncio_reader_over_tcp():
    async def scenario():
        got: list[object] = []
        done = asyncio.Event()

        async def serve(reader, writer):
            while True:
                try:
                    got.append(await asyncio.wait_for(read_frame_async(reader, SECRET, 1 << 20), 5))
                except WireError as e:
                    got.append(e)
                    break
            writer.close()
            done.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await write_frame_async(writer, MsgType.PUSH, {"k": 1}, {"x": torch.arange(5.0)}, SECRET)
        writer.write(encode(MsgType.PUSH, {"k": 2}, None, b"wrong"))
        await writer.drain()
        await asyncio.wait_for(done.wait(), 5)
        writer.close()
        server.close()
        await server.wait_closed()
        return got

    got = asyncio.run(scenario())
    assert got[0].header == {"k": 1} and torch.equal(got[0].tensors["x"], torch.arange(5.0))
    assert isinstance(got[1], BadAuth)


def test_asyncio_reader_truncation_and_close():
    async def read_from(data: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame_async(reader, SECRET)

    buf = encode(MsgType.PUSH, {}, {"x": torch.ones(3)}, SECRET)
    with pytest.raises(Closed):
        asyncio.run(read_from(b""))
    with pytest.raises(Truncated):
        asyncio.run(read_from(buf[:5]))
    with pytest.raises(Truncated):
        asyncio.run(read_from(buf[:-1]))


# --- quantization -------------------------------------------------------------------

def test_bf16_relative_error_bound():
    t = torch.randn(10_000, generator=torch.Generator().manual_seed(1)) * 3
    q, scale = quantize(t, Quantize.BF16)
    assert q.dtype == torch.bfloat16 and scale is None
    back = dequantize(q, None, Quantize.BF16)
    assert bool(((back - t).abs() <= t.abs() * 2.0 ** -8).all())


def test_int8_absolute_error_bound_and_size():
    t = torch.randn(10_000, generator=torch.Generator().manual_seed(2))
    q, scale = quantize(t, Quantize.INT8)
    assert q.dtype == torch.int8
    back = dequantize(q, scale, Quantize.INT8)
    bound = float(t.abs().max()) / 254
    assert float((back - t).abs().max()) <= bound * (1 + 1e-5)
    assert float((back - t).abs().max()) > bound / 4  # the bound is not vacuous
    assert torch.equal(dequantize(*quantize(torch.zeros(4), Quantize.INT8), Quantize.INT8), torch.zeros(4))


def test_int8_keeps_nan_visible():
    t = torch.ones(8)
    t[2] = float("nan")
    assert bool(torch.isnan(dequantize(*quantize(t, Quantize.INT8), Quantize.INT8)).all())
    t[2] = float("inf")
    assert not bool(torch.isfinite(dequantize(*quantize(t, Quantize.INT8), Quantize.INT8)).all())


@pytest.mark.parametrize("mode, max_ratio", [(Quantize.NONE, 1.01), (Quantize.BF16, 0.51), (Quantize.INT8, 0.26)])
def test_packed_tensors_through_a_frame(mode, max_ratio):
    original = {"frag.0": torch.randn(20_000), "frag.1": torch.randn(100)}
    plain = len(encode(MsgType.PUSH, {}, original, SECRET))
    buf = encode(MsgType.PUSH, {"quantize": mode.value}, pack_tensors(original, mode), SECRET)
    assert len(buf) <= plain * max_ratio
    back = unpack_tensors(decode(buf, SECRET).tensors, mode)
    assert set(back) == set(original)
    for name, t in original.items():
        assert back[name].dtype == torch.float32
        assert float((back[name] - t).abs().max()) <= float(t.abs().max()) / 254 * 1.0001


def test_dequantize_refuses_mismatched_dtype():
    with pytest.raises(Malformed):
        dequantize(torch.ones(2), None, Quantize.INT8)
    with pytest.raises(Malformed):
        dequantize(torch.ones(2), None, Quantize.BF16)


def test_bf16_bound_is_tight():
    # 1 + 2^-8 lies exactly between two bfloat16 values: the error is the full bound
    t = torch.tensor([1.0 + 2.0 ** -8 + 2.0 ** -20])
    back = dequantize(*quantize(t, Quantize.BF16), Quantize.BF16)
    assert float((back - t).abs()) > float(t) * 2.0 ** -9
