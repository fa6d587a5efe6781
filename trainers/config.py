"""The trainer's run configuration: one frozen dataclass, parsed at the edge.

The synchronizer reads it from ``DIR/config.json`` and hands it to every learner in
the join reply, so all processes of a run train with the same settings. The three
modes share the learner code so comparisons are fair (SPEC §1): ``decoupled`` (Decoupled
DiLoCo), ``diloco`` (synchronous barrier every H steps) and ``ddp`` (synchronous every
step; ``elastic`` drops dead learners after a timeout).
"""
from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any, Mapping

from harness.errors import ConfigError


class Mode(str, enum.Enum):
    DECOUPLED = "decoupled"
    DILOCO = "diloco"
    DDP = "ddp"


class MergeRule(str, enum.Enum):
    WEIGHTED = "weighted"  # token-weighted mean of outer gradients
    RADIAL = "radial"  # mean of norms x direction of the mean of unit vectors


class Quantize(str, enum.Enum):
    NONE = "none"
    BF16 = "bf16"
    INT8 = "int8"


PRESETS = ("tiny", "small", "medium")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    mode: Mode = Mode.DECOUPLED
    learners: int = 2
    preset: str = "tiny"
    seq_len: int = 64
    batch_size: int = 8
    inner_lr: float = 3e-3
    weight_decay: float = 0.0
    # Decoupled DiLoCo (SPEC §1). Paper defaults are P=24, H=24, tau=2; P is capped by
    # the number of tensors the preset has, so tiny models use fewer fragments.
    fragments: int = 4
    sync_every: int = 24
    overlap_steps: int = 2
    quorum: int = 1  # K; ddp and diloco always wait for every learner (0 means all)
    grace_gamma: float = 0.5
    grace_cap_steps: float = 1.0
    outer_lr: float = 0.7
    # DiLoCo uses 0.9; with K=1 asynchronous merges (each learner's push merged on its
    # own, against the current Θ_p) 0.9 diverged on tiny within 30 s (eval loss 2.8 ->
    # 56), 0.5 trains smoothly (5.45 -> 2.1 in 60 s): see trainers/syncer_state.py.
    outer_momentum: float = 0.5
    nesterov: bool = True
    merge: MergeRule = MergeRule.WEIGHTED
    blend_alpha: float = 1.0
    max_staleness: int = 16
    max_update_norm_ratio: float = 10.0  # reject |update| > ratio * |fragment|
    quantize: Quantize = Quantize.NONE
    elastic: bool = False
    elastic_timeout_s: float = 5.0
    checkpoint_every: int = 50
    seed: int = 0
    data: str | None = None  # folder of text; None = the Python standard library
    eval_every_s: float = 5.0
    eval_batches: int = 4
    rpc_timeout_s: float = 10.0
    heartbeat_s: float = 1.0

    def __post_init__(self) -> None:
        if self.learners < 1:
            raise ConfigError("must be at least 1", key="learners", value=self.learners)
        if self.preset not in PRESETS:
            raise ConfigError(f"must be one of {', '.join(PRESETS)}", key="preset", value=self.preset)
        for name in ("fragments", "sync_every", "seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError("must be at least 1", key=name, value=getattr(self, name))
        if self.overlap_steps < 0:
            raise ConfigError("must be >= 0", key="overlap_steps", value=self.overlap_steps)
        if not 0 <= self.quorum <= self.learners:
            raise ConfigError(f"must be between 0 and learners ({self.learners})", key="quorum", value=self.quorum)
        if not 0.0 <= self.grace_gamma < 1.0:
            raise ConfigError("must be in [0, 1)", key="grace_gamma", value=self.grace_gamma)
        if not 0.0 < self.blend_alpha <= 1.0:
            raise ConfigError("must be in (0, 1]", key="blend_alpha", value=self.blend_alpha)
        for name in ("inner_lr", "outer_lr", "rpc_timeout_s", "heartbeat_s", "eval_every_s", "elastic_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError("must be > 0", key=name, value=getattr(self, name))

    @property
    def effective_quorum(self) -> int:
        """K as the synchronizer applies it: synchronous modes wait for everyone."""
        if self.mode is not Mode.DECOUPLED or self.quorum == 0:
            return self.learners
        return self.quorum

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, enum.Enum):
                out[k] = v.value
        return out

    def replace(self, **changes: Any) -> "TrainerConfig":
        return dataclasses.replace(self, **changes)


_ENUMS = {"mode": Mode, "merge": MergeRule, "quantize": Quantize}


def from_dict(data: Mapping[str, Any], *, source: str = "config") -> TrainerConfig:
    """Builds a TrainerConfig; unknown keys and bad values name the key and the source."""
    fields = {f.name: f for f in dataclasses.fields(TrainerConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError("unknown key", file=source, key=key, value=value)
        if key in _ENUMS:
            try:
                value = _ENUMS[key](value)
            except ValueError:
                allowed = ", ".join(m.value for m in _ENUMS[key])
                raise ConfigError(f"must be one of {allowed}", file=source, key=key, value=value) from None
        else:
            default = fields[key].default
            want = type(default) if default is not None else str
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if value is not None and not isinstance(value, want) or isinstance(value, bool) and want is not bool:
                raise ConfigError(f"must be {want.__name__}", file=source, key=key, value=value)
        kwargs[key] = value
    try:
        return TrainerConfig(**kwargs)
    except ConfigError as e:
        raise ConfigError(str(e).split(": ", 1)[-1], file=source, key=e.key, value=None) from None


def load(path: str | Path) -> TrainerConfig:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read trainer config: {e}", file=str(p)) from e
    return from_dict(data, source=str(p))


def save(config: TrainerConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def parse_assignments(items: list[str], key: str) -> dict[str, Any]:
    """``KEY=VALUE`` command-line items (``--set``, ``--param``) as a dict: a VALUE that
    is JSON keeps its type (numbers stay numbers), anything else is a bare string (an
    enum value, a path). A malformed item is a ConfigError naming ``key``."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigError("expected KEY=VALUE", key=key, value=item)
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out
