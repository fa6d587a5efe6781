"""Scenario files: YAML in, frozen ``harness.model.Scenario`` out (parse at the edge).

The schema is written down in ``scenarios/README.md``. Every mistake -- an unknown key, a
wrong type, a value out of range, an unknown fault kind or target, a missing or invalid
fault parameter, a YAML syntax error -- is one ``ConfigError`` naming the file, the key
path (``faults.events[2].target``) and the value, so ``chaosloco`` prints one line and
exits 2 before anything is started. ``validate_main`` is ``chaosloco validate FILE``.

Validation is written by hand rather than with a schema library (jsonschema, pydantic):
neither is a dependency, and their messages name neither our key paths nor the file the
way a user needs; the checks themselves are short.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from harness.backend import LinkSpec
from harness.errors import ConfigError
from harness.fault_params import RULES, DurationRule, KindRule, Targets
from harness.model import Checks, Distribution, FaultEvent, FaultKind, RandomFaults, Scenario
from trainers import config as trainer_config

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_KEYS = ("name", "description", "duration_s", "seed", "ready_timeout_s", "cluster",
             "links", "faults", "checks")
_CLUSTER_KEYS = ("learners", "mode", "preset", "trainer", "cpu_shares")
_LINK_KEYS = ("latency_ms", "jitter_ms", "bandwidth_kbps")
_EVENT_KEYS = ("at_s", "kind", "target", "duration_s")
_RANDOM_KEYS = ("kind", "targets", "mtbf_s", "duration", "start_s", "end_s")
_CHECK_KEYS = ("goodput_min", "goodput_efficiency_min", "rejoin_max_s", "reconnect_max_s", "max_stall_s",
               "quality_gap_max", "eval_loss_drop_min", "invariants")
_MAX_DURATION_S = 7 * 24 * 3600.0


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error, not a silent
    overwrite (the second ``kind:`` of a copied fault would otherwise win unseen)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_unique_mapping)


class _Reader:
    """Typed accessors that turn a wrong value into a ConfigError naming file and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str, value: Any = None) -> ConfigError:
        return ConfigError(message, file=self.source, key=key, value=value)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None = None,
                required: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a mapping", value)
        for k, v in value.items():
            if not isinstance(k, str):
                raise self.error(f"{key}.{k}" if key else str(k), "keys must be strings", k)
            if allowed is not None and k not in allowed:
                raise self.error(_join(key, k), f"unknown key (allowed: {', '.join(allowed)})", v)
        for k in required:
            if k not in value:
                raise self.error(_join(key, k), "missing required key")
        return value

    def number(self, value: Any, key: str, *, low: float | None = None, low_open: bool = False,
               high: float | None = None, integer: bool = False) -> float | int:
        ok_types = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            raise self.error(key, "must be an integer" if integer else "must be a number", value)
        if not math.isfinite(value):
            raise self.error(key, "must be finite", value)
        if low is not None and (value <= low if low_open else value < low):
            raise self.error(key, f"must be {'>' if low_open else '>='} {low:g}", value)
        if high is not None and value > high:
            raise self.error(key, f"must be <= {high:g}", value)
        return int(value) if integer else float(value)

    def string(self, value: Any, key: str, choices: tuple[str, ...] = ()) -> str:
        if not isinstance(value, str):
            raise self.error(key, "must be a string", value)
        if choices and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}", value)
        return value

    def sequence(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(key, "must be a list", value)
        return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read scenario: {e.strerror or e}", file=str(p)) from e
    return parse_scenario(text, str(p), path=p)


def parse_scenario(text: str, source: str = "<scenario>", *, path: Path | None = None) -> Scenario:
    """Parses and validates a scenario; raises ConfigError on the first mistake."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"invalid YAML: {' '.join(str(problem).split())}",
                          file=source, key=where) from None
    r = _Reader(source)
    if data is None:
        raise r.error("", "the scenario file is empty")
    top = r.mapping(data, "", _TOP_KEYS, required=("duration_s", "cluster"))

    default_name = path.stem if path is not None else "scenario"
    name = r.string(top.get("name", default_name), "name")
    if not _NAME.match(name):
        raise r.error("name", "must start with a letter or digit and use only letters, digits, '-', '_', '.'", name)
    duration_s = r.number(top["duration_s"], "duration_s", low=0.0, low_open=True, high=_MAX_DURATION_S)
    trainer, cpu_shares = _parse_cluster(r, top["cluster"])
    learners = [f"learner-{i}" for i in range(trainer.learners)]
    faults = r.mapping(top.get("faults", {}) or {}, "faults", ("events", "random"))
    timed = tuple(_parse_event(r, e, f"faults.events[{i}]", i, learners, duration_s)
                  for i, e in enumerate(r.sequence(faults.get("events", []) or [], "faults.events")))
    random = tuple(_parse_random(r, p, f"faults.random[{i}]", learners, duration_s)
                   for i, p in enumerate(r.sequence(faults.get("random", []) or [], "faults.random")))
    return Scenario(
        name=name,
        path=path,
        description=r.string(top.get("description", ""), "description"),
        duration_s=duration_s,
        trainer=trainer,
        cpu_shares=cpu_shares,
        links=_parse_links(r, top.get("links"), learners),
        timed=timed,
        random=random,
        checks=_parse_checks(r, top.get("checks", {}) or {}),
        seed=r.number(top.get("seed", 0), "seed", low=0, integer=True),
        ready_timeout_s=r.number(top.get("ready_timeout_s", 120.0), "ready_timeout_s",
                                 low=0.0, low_open=True, high=3600.0),
        text=text,
    )


def _parse_cluster(r: _Reader, value: Any) -> tuple[trainer_config.TrainerConfig, tuple[float, ...]]:
    cluster = r.mapping(value, "cluster", _CLUSTER_KEYS, required=("learners",))
    settings = dict(r.mapping(cluster.get("trainer", {}) or {}, "cluster.trainer"))
    for k in ("learners", "mode", "preset"):
        if k in settings:
            raise r.error(f"cluster.trainer.{k}", f"set it as cluster.{k}", settings[k])
        if k in cluster:
            settings[k] = cluster[k]
    try:
        trainer = trainer_config.from_dict(settings, source=None)  # type: ignore[arg-type]
    except ConfigError as e:
        prefix = "cluster" if e.key in ("learners", "mode", "preset") else "cluster.trainer"
        message = str(e)[len(f"{e.key}: "):] if e.key else str(e)
        raise ConfigError(message, file=r.source, key=f"{prefix}.{e.key}") from None
    shares: tuple[float, ...] = ()
    if cluster.get("cpu_shares") is not None:
        raw = r.sequence(cluster["cpu_shares"], "cluster.cpu_shares")
        if len(raw) != trainer.learners:
            raise r.error("cluster.cpu_shares", f"needs one share per learner ({trainer.learners})", raw)
        # A learner runs one torch thread: a share above one core would not speed it up.
        shares = tuple(r.number(v, f"cluster.cpu_shares[{i}]", low=0.0, low_open=True, high=1.0)
                       for i, v in enumerate(raw))
    return trainer, shares


def _parse_link(r: _Reader, value: Any, key: str, base: LinkSpec) -> LinkSpec:
    spec = r.mapping(value or {}, key, _LINK_KEYS)
    bandwidth = spec.get("bandwidth_kbps", base.bandwidth_kbps)
    if "bandwidth_kbps" in spec and bandwidth is not None:
        bandwidth = r.number(bandwidth, f"{key}.bandwidth_kbps", low=0.0, low_open=True)
    return LinkSpec(
        latency_ms=r.number(spec.get("latency_ms", base.latency_ms), f"{key}.latency_ms", low=0.0),
        jitter_ms=r.number(spec.get("jitter_ms", base.jitter_ms), f"{key}.jitter_ms", low=0.0),
        bandwidth_kbps=bandwidth,
    )


def _parse_links(r: _Reader, value: Any, learners: list[str]) -> tuple[LinkSpec, ...]:
    if value is None:
        return ()
    links = r.mapping(value, "links", ("default", "per_learner"))
    default = _parse_link(r, links.get("default"), "links.default", LinkSpec())
    per = r.mapping(links.get("per_learner", {}) or {}, "links.per_learner")
    for target in per:
        if target not in learners:
            raise r.error(f"links.per_learner.{target}", f"unknown learner (this cluster has {_span(learners)})", target)
    return tuple(_parse_link(r, per[n], f"links.per_learner.{n}", default) if n in per else default
                 for n in learners)


def _span(learners: list[str]) -> str:
    return learners[0] if len(learners) == 1 else f"{learners[0]} .. {learners[-1]}"


def _parse_kind(r: _Reader, spec: Mapping[str, Any], key: str) -> tuple[FaultKind, KindRule]:
    raw = spec.get("kind")
    try:
        kind = FaultKind(raw)
    except ValueError:
        raise r.error(f"{key}.kind", f"unknown fault kind (known: {', '.join(k.value for k in FaultKind)})", raw) from None
    return kind, RULES[kind]


def _parse_target(r: _Reader, raw: Any, key: str, rule: KindRule, kind: FaultKind,
                  learners: list[str]) -> str:
    target = r.string(raw, key)
    if rule.targets is Targets.SYNCER:
        if target != "syncer":
            raise r.error(key, f"{kind.value} targets the synchronizer: must be syncer", target)
    elif target not in learners:
        raise r.error(key, f"unknown learner for {kind.value} (this cluster has {_span(learners)})", target)
    return target


def _parse_params(r: _Reader, spec: Mapping[str, Any], key: str, kind: FaultKind, rule: KindRule,
                  own_keys: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, value in spec.items():
        if name in own_keys:
            continue
        if name not in rule.params:
            allowed = ", ".join((*own_keys, *rule.params)) if rule.params else ", ".join(own_keys)
            raise r.error(f"{key}.{name}", f"not a parameter of {kind.value} (allowed: {allowed})", value)
    for name, p in rule.params.items():
        pkey = f"{key}.{name}"
        if name not in spec:
            if p.required:
                raise r.error(pkey, f"{kind.value} needs {name} ({p.describe()})")
            params[name] = p.default
        elif p.type is str:
            params[name] = r.string(spec[name], pkey, p.choices)
        else:
            params[name] = r.number(spec[name], pkey, low=p.low, low_open=p.low_open, high=p.high,
                                    integer=p.type is int)
    if kind is FaultKind.SLICER and params["size_variation"] >= params["average_size"]:
        raise r.error(f"{key}.size_variation", "must be smaller than average_size", params["size_variation"])
    return params


def _duration_floor(rule: KindRule) -> tuple[float, bool]:
    """(low, open): a restart delay may be 0; any other duration must be positive."""
    return (0.0, False) if rule.duration is DurationRule.RESTART else (0.0, True)


def _parse_event(r: _Reader, value: Any, key: str, index: int, learners: list[str],
                 run_s: float) -> FaultEvent:
    spec = r.mapping(value, key, required=("at_s", "kind"))
    kind, rule = _parse_kind(r, spec, key)
    at_s = r.number(spec["at_s"], f"{key}.at_s", low=0.0)
    if at_s >= run_s:
        raise r.error(f"{key}.at_s", f"must be before the end of the run ({run_s:g} s)", spec["at_s"])
    if "target" not in spec and rule.targets is not Targets.SYNCER:
        raise r.error(f"{key}.target", "missing required key")
    target = _parse_target(r, spec.get("target", "syncer"), f"{key}.target", rule, kind, learners)
    duration = spec.get("duration_s")
    if rule.duration is DurationRule.NONE and "duration_s" in spec:
        raise r.error(f"{key}.duration_s", f"{kind.value} is instantaneous: give no duration", duration)
    if rule.duration is DurationRule.REQUIRED and duration is None:
        raise r.error(f"{key}.duration_s", f"{kind.value} needs a duration_s")
    if duration is not None:
        low, low_open = _duration_floor(rule)
        duration = r.number(duration, f"{key}.duration_s", low=low, low_open=low_open)
        if at_s + duration > run_s:
            raise r.error(f"{key}.duration_s", f"heals at {at_s + duration:g} s, after the run ends ({run_s:g} s)", spec["duration_s"])
    params = _parse_params(r, spec, key, kind, rule, _EVENT_KEYS)
    return FaultEvent(fault_id=f"f{index:03d}-{kind.value}-{target}", at_s=at_s, kind=kind,
                      target=target, duration_s=duration, params=params)


def _parse_distribution(r: _Reader, value: Any, key: str, rule: KindRule) -> Distribution:
    low, low_open = _duration_floor(rule)
    if not isinstance(value, Mapping):
        return Distribution("fixed", value=r.number(value, key, low=low, low_open=low_open))
    spec = r.mapping(value, key, ("fixed", "uniform", "exponential"))
    if len(spec) != 1:
        raise r.error(key, "give exactly one of fixed, uniform, exponential", dict(spec))
    (form, raw), = spec.items()
    if form == "fixed":
        return Distribution("fixed", value=r.number(raw, f"{key}.fixed", low=low, low_open=low_open))
    if form == "exponential":  # the mean
        return Distribution("exponential", value=r.number(raw, f"{key}.exponential", low=0.0, low_open=True))
    bounds = r.sequence(raw, f"{key}.uniform")
    if len(bounds) != 2:
        raise r.error(f"{key}.uniform", "must be [low, high]", raw)
    lo = r.number(bounds[0], f"{key}.uniform[0]", low=low, low_open=low_open)
    hi = r.number(bounds[1], f"{key}.uniform[1]", low=lo)
    return Distribution("uniform", low=lo, high=hi)


def _parse_random(r: _Reader, value: Any, key: str, learners: list[str], run_s: float) -> RandomFaults:
    spec = r.mapping(value, key, required=("kind", "mtbf_s"))
    kind, rule = _parse_kind(r, spec, key)
    default_targets = "syncer" if rule.targets is Targets.SYNCER else "learners"
    raw_targets = spec.get("targets", default_targets)
    if raw_targets == "learners":
        if rule.targets is Targets.SYNCER:
            raise r.error(f"{key}.targets", f"{kind.value} targets the synchronizer: must be syncer", raw_targets)
        targets = tuple(learners)
    elif isinstance(raw_targets, str):
        targets = (_parse_target(r, raw_targets, f"{key}.targets", rule, kind, learners),)
    else:
        items = r.sequence(raw_targets, f"{key}.targets")
        if not items:
            raise r.error(f"{key}.targets", "must name at least one target", raw_targets)
        targets = tuple(_parse_target(r, t, f"{key}.targets[{i}]", rule, kind, learners)
                        for i, t in enumerate(items))
        if len(set(targets)) != len(targets):
            raise r.error(f"{key}.targets", "names a target twice", raw_targets)
    mtbf_s = r.number(spec["mtbf_s"], f"{key}.mtbf_s", low=0.0, low_open=True)
    if rule.duration is DurationRule.NONE:
        if "duration" in spec:
            raise r.error(f"{key}.duration", f"{kind.value} is instantaneous: give no duration", spec["duration"])
        duration = Distribution("fixed", value=0.0)
    elif "duration" not in spec:
        raise r.error(f"{key}.duration", f"a random {kind.value} process needs a duration "
                                          "(a number, or fixed / uniform / exponential)")
    else:
        duration = _parse_distribution(r, spec["duration"], f"{key}.duration", rule)
    start_s = r.number(spec.get("start_s", 0.0), f"{key}.start_s", low=0.0)
    if start_s >= run_s:
        raise r.error(f"{key}.start_s", f"must be before the end of the run ({run_s:g} s)", spec["start_s"])
    end_s = spec.get("end_s")
    if end_s is not None:
        end_s = r.number(end_s, f"{key}.end_s", low=start_s, low_open=True, high=run_s)
    params = _parse_params(r, spec, key, kind, rule, _RANDOM_KEYS)
    return RandomFaults(kind=kind, targets=targets, mtbf_s=mtbf_s, duration=duration,
                        params=params, start_s=start_s, end_s=end_s)


def _parse_checks(r: _Reader, value: Any) -> Checks:
    spec = r.mapping(value, "checks", _CHECK_KEYS)
    bounds: dict[str, dict[str, Any]] = {
        "goodput_min": dict(low=0.0, high=1.0),
        "goodput_efficiency_min": dict(low=0.0, high=1.0),
        "rejoin_max_s": dict(low=0.0, low_open=True),
        "reconnect_max_s": dict(low=0.0, low_open=True),
        "max_stall_s": dict(low=0.0, low_open=True),
        "quality_gap_max": dict(low=-1.0, low_open=True),
        "eval_loss_drop_min": dict(low=0.0, high=1.0, low_open=False),
    }
    out: dict[str, Any] = {}
    for name, kw in bounds.items():
        if spec.get(name) is not None:
            out[name] = r.number(spec[name], f"checks.{name}", **kw)
    if "invariants" in spec:
        if not isinstance(spec["invariants"], bool):
            raise r.error("checks.invariants", "must be true or false", spec["invariants"])
        out["invariants"] = spec["invariants"]
    return Checks(**out)


def validate_main(argv: list[str]) -> int:
    """``chaosloco validate FILE [--seed N]``: parse, build the schedule, start nothing."""
    from harness.schedule import build_schedule  # schedule imports this module's types only

    ap = argparse.ArgumentParser(prog="chaosloco validate",
                                 description="Check a scenario file and its fault schedule; start nothing.")
    ap.add_argument("file", help="scenario YAML file")
    ap.add_argument("--seed", type=int, default=None, help="seed for the random faults (default: the scenario's)")
    args = ap.parse_args(argv)
    scenario = load_scenario(args.file)
    seed = scenario.seed if args.seed is None else args.seed
    if seed < 0:
        raise ConfigError("must be >= 0", key="--seed", value=seed)
    schedule = build_schedule(scenario, seed)
    print(f"ok: {scenario.name}, {scenario.trainer.learners} learners, "
          f"{len(schedule)} fault{'' if len(schedule) == 1 else 's'} scheduled for seed {seed}")
    return 0
