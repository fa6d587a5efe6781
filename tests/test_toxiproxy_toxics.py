"""Each toxic's logic with exact values, on a virtual clock (no sockets, no sleeping)."""
from __future__ import annotations

import asyncio
import random

import pytest

from faults.toxiproxy.toxics import TOXICS, ToxicError, toxic_class


class VirtualLink:
    """LinkControl on a virtual clock: waits jump the clock; records closes and resets."""

    def __init__(self) -> None:
        self.clock = 100.0
        self.arrived = 100.0
        self.closed = self.was_reset = False

    def now(self) -> float:
        return self.clock

    async def wait_until(self, deadline: float, toxic) -> bool:
        if toxic.removed.is_set():
            return False
        self.clock = max(self.clock, deadline)
        return True

    def close(self) -> None:
        self.closed = True

    def reset(self) -> None:
        self.was_reset = True


def _make(type_name: str, seed: int = 1, **attributes):
    cls = toxic_class(type_name)
    toxic = cls(cls.validate(attributes), random.Random(seed))
    toxic.removed = asyncio.Event()
    return toxic


def _run(toxic, chunks: list[bytes], link: VirtualLink) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []

    async def emit(data: bytes) -> None:
        out.append((round(link.clock - 100.0, 6), data))

    async def go() -> None:
        for c in chunks:
            await toxic.pipe(c, emit, link)
    asyncio.run(go())
    return out


def test_registry_has_every_toxiproxy_toxic():
    assert set(TOXICS) == {"latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data",
                           "noop"}
    with pytest.raises(ToxicError, match="invalid toxic type"):
        toxic_class("gremlins")


@pytest.mark.parametrize("value", [-1, -0.5, True, "5", None, [1], float("nan"), float("inf"), 2 ** 60])
def test_attributes_must_be_non_negative_whole_numbers(value):
    with pytest.raises(ToxicError, match="rate"):
        toxic_class("bandwidth").validate({"rate": value})


def test_validate_fills_defaults_and_ignores_unknown_keys():
    assert toxic_class("latency").validate({"latency": 5.0, "colour": "red"}) == {"latency": 5, "jitter": 0}
    with pytest.raises(ToxicError, match="size_variation"):
        toxic_class("slicer").validate({"average_size": 10, "size_variation": 11})


def test_latency_delays_from_arrival_with_seeded_jitter():
    link = VirtualLink()
    assert _run(_make("latency", latency=300), [b"a"], link) == [(0.3, b"a")]
    delays = [_make("latency", seed=s, latency=100, jitter=50).delay_s() for s in range(200)]
    assert min(delays) >= 0.05 and max(delays) <= 0.15 and len(set(delays)) > 20
    again = [_make("latency", seed=s, latency=100, jitter=50).delay_s() for s in range(200)]
    assert delays == again


def test_bandwidth_releases_100_ms_slices_at_the_rate():
    link = VirtualLink()
    out = _run(_make("bandwidth", rate=10), [b"x" * 2500], link)  # 10 KB/s: 1000-byte slices
    assert [(t, len(d)) for t, d in out] == [(0.1, 1000), (0.2, 1000), (0.25, 500)]
    assert _run(_make("bandwidth", rate=0), [b"abc"], VirtualLink()) == [(0.0, b"abc")]


def test_bandwidth_removed_midway_passes_the_rest_at_once():
    toxic, link = _make("bandwidth", rate=10), VirtualLink()
    toxic.removed.set()
    assert _run(toxic, [b"x" * 2500], link) == [(0.0, b"x" * 2500)]


def test_slicer_cuts_within_bounds_keeping_every_byte():
    data = bytes(range(256)) * 10
    out = _run(_make("slicer", average_size=50, size_variation=20, delay=1000), [data], VirtualLink())
    assert b"".join(d for _, d in out) == data
    assert all(30 <= len(d) <= 70 for _, d in out[:-1])
    assert [t for t, _ in out] == pytest.approx([i * 0.001 for i in range(len(out))])


def test_limit_data_passes_exactly_n_bytes_then_closes():
    toxic, link = _make("limit_data", bytes=7), VirtualLink()
    out = _run(toxic, [b"abcd", b"efgh", b"ijkl"], link)
    assert b"".join(d for _, d in out) == b"abcdefg" and link.closed


def test_timeout_drops_and_its_watch_closes_after_the_timeout():
    toxic, link = _make("timeout", timeout=250), VirtualLink()
    assert _run(toxic, [b"lost"], link) == []
    asyncio.run(toxic.watch(link))
    assert link.closed and link.clock == pytest.approx(100.25)
    blackhole, link0 = _make("timeout", timeout=0), VirtualLink()
    asyncio.run(blackhole.watch(link0))
    assert not link0.closed


def test_reset_peer_resets_after_its_timeout_unless_removed():
    link = VirtualLink()
    assert _run(_make("reset_peer", timeout=100), [b"x"], link) == [] and link.was_reset
    toxic, link2 = _make("reset_peer", timeout=100), VirtualLink()
    toxic.removed.set()
    assert _run(toxic, [b"x"], link2) == [(0.0, b"x")] and not link2.was_reset


def test_slow_close_waits_its_delay_at_eof():
    toxic, link = _make("slow_close", delay=400), VirtualLink()
    asyncio.run(toxic.on_eof(link))
    assert link.clock == pytest.approx(100.4)
