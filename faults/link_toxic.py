"""Toxiproxy toxics on a learner's link: latency, bandwidth, timeout, reset_peer,
limit_data, slicer, slow_close.

These differ only by toxic type and attributes, so one module holds them (a table from
scenario parameters to Toxiproxy attributes) instead of seven near-identical files.
``params.direction`` is ``upstream`` (learner -> synchronizer), ``downstream`` or
``both`` (the default). Toxic names derive from the fault id, so heal removes exactly
what this fault added and is idempotent (a toxic already gone is fine).
"""
from __future__ import annotations

from typing import Any, Callable

from faults.base import FaultContext
from faults.registry import node_state
from harness.errors import ConfigError
from harness.model import FaultKind

# kind -> (Toxiproxy toxic type, {scenario param: (toxic attribute, default)})
TOXICS: dict[FaultKind, tuple[str, dict[str, tuple[str, float | None]]]] = {
    FaultKind.LATENCY: ("latency", {"latency_ms": ("latency", None), "jitter_ms": ("jitter", 0)}),
    FaultKind.BANDWIDTH: ("bandwidth", {"rate_kbps": ("rate", None)}),
    FaultKind.TIMEOUT: ("timeout", {"timeout_ms": ("timeout", 0)}),
    FaultKind.RESET_PEER: ("reset_peer", {"timeout_ms": ("timeout", 0)}),
    FaultKind.LIMIT_DATA: ("limit_data", {"bytes": ("bytes", None)}),
    FaultKind.SLICER: ("slicer", {"average_size": ("average_size", 64), "size_variation": ("size_variation", 32),
                                  "delay_us": ("delay", 10)}),
    FaultKind.SLOW_CLOSE: ("slow_close", {"delay_ms": ("delay", None)}),
}
TOXIC_KINDS = tuple(TOXICS)
DIRECTIONS = {"upstream": ("upstream",), "downstream": ("downstream",), "both": ("upstream", "downstream")}


def toxic_attributes(kind: FaultKind, params: dict[str, Any], fault_id: str) -> dict[str, int]:
    """Scenario parameters -> Toxiproxy attributes (integers, as the API wants them)."""
    _, table = TOXICS[kind]
    unknown = set(params) - set(table) - {"direction", "toxicity"}
    if unknown:
        raise ConfigError("unknown parameter", key=f"{fault_id}.params.{sorted(unknown)[0]}")
    attrs: dict[str, int] = {}
    for name, (attribute, default) in table.items():
        value = params.get(name, default)
        if value is None:
            raise ConfigError("missing fault parameter", key=f"{fault_id}.params.{name}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError("must be a number", key=f"{fault_id}.params.{name}", value=value) from None
        if number < 0:
            raise ConfigError("must be >= 0", key=f"{fault_id}.params.{name}", value=value)
        attrs[attribute] = int(round(number))
    return attrs


class LinkToxic:
    """One toxic type on one learner's proxy, in one or both directions."""

    def __init__(self, kind: FaultKind) -> None:
        self.kind = kind.value
        self._fault_kind = kind

    def _plan(self, ctx: FaultContext) -> tuple[str, dict[str, int], tuple[str, ...], float]:
        params = dict(ctx.params or {})
        direction = str(params.get("direction", "both"))
        if direction not in DIRECTIONS:
            raise ConfigError("must be upstream, downstream or both", key=f"{ctx.fault_id}.params.direction",
                              value=direction)
        toxicity = float(params.get("toxicity", 1.0))
        return TOXICS[self._fault_kind][0], toxic_attributes(self._fault_kind, params, ctx.fault_id), \
            DIRECTIONS[direction], toxicity

    def toxic_names(self, ctx: FaultContext) -> list[str]:
        return [f"{ctx.fault_id}-{stream}" for stream in ("upstream", "downstream")]

    def inject(self, ctx: FaultContext) -> None:
        toxic_type, attrs, streams, toxicity = self._plan(ctx)
        node_state(ctx, "degraded", 1.0)
        for stream in streams:
            name = f"{ctx.fault_id}-{stream}"
            ctx.links.add_toxic(ctx.target, name=name, type=toxic_type, stream=stream,
                                toxicity=toxicity, attributes=attrs)

    def heal(self, ctx: FaultContext) -> None:
        present = {t.name for t in ctx.links.toxics(ctx.target)}
        for name in self.toxic_names(ctx):
            if name in present:
                ctx.links.remove_toxic(ctx.target, name)
        node_state(ctx, "up", 1.0)


def factory(kind: FaultKind) -> Callable[[], LinkToxic]:
    return lambda: LinkToxic(kind)
