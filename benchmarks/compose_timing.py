"""The compose backend's costs: image build, bring-up and teardown, per-learner throughput.

    .venv/bin/python benchmarks/compose_timing.py                  # everything below
    .venv/bin/python benchmarks/compose_timing.py --only image     # just the image times
    .venv/bin/python benchmarks/compose_timing.py --only baked     # the venv baked in, for comparison

* **image**: the first build (the runtime tag removed first, as on a fresh CI machine)
  and a cached ``ensure_image`` (hash the runtime, find the tag);
* **bring-up / teardown** for each ``--learners`` count: ``backend.start`` (containers
  exist), then until every learner's ``joined`` event (the run's ``ready``), then
  ``teardown`` (compose down + label sweep) -- no training in between;
* **throughput**: ``--tp-learners`` learners train fault-free for ``--tp-seconds`` on the
  local backend and then on compose; per-learner tokens/s is the median over each
  learner's ``progress`` windows (tokens / wall_s), skipping the first windows.

Prints one JSON object (also written to ``--out``). Numbers depend on the machine and
its load: quote them with the machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.backend import ClusterSpec  # noqa: E402
from harness.journal import Journal  # noqa: E402
from trainers.config import TrainerConfig  # noqa: E402
from trainers.events import read_events  # noqa: E402

TRAINER = dict(preset="tiny", fragments=2, sync_every=8, eval_every_s=60.0)


def _wait_joined(run_dir: Path, learners: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        path = run_dir / "events.jsonl"
        evs = read_events(path) if path.exists() else []
        if len({e["learner"] for e in evs if e.get("ev") == "joined"}) >= learners:
            return time.monotonic()
        time.sleep(0.1)  # polling the event log another process appends to; bounded
    raise SystemExit(f"learners did not all join within {timeout_s:.0f} s (see {run_dir}/logs)")


def _backend(name: str, journal: Journal):
    if name == "local":
        from harness.local import LocalBackend
        return LocalBackend(journal=journal)
    from harness.compose_backend import ComposeBackend
    return ComposeBackend(journal=journal)


def image_times() -> dict:
    import docker
    from compose import image

    client = docker.from_env()
    tag, _, _ = image.image_tag()
    if image._image_exists(client, tag):
        client.images.remove(tag, force=True)
    image._memo.clear()
    t0 = time.monotonic()
    image.ensure_image(client)
    first = time.monotonic() - t0
    image._memo.clear()
    t0 = time.monotonic()
    image.ensure_image(client)
    cached = time.monotonic() - t0
    size = client.images.get(tag).attrs.get("Size", 0)
    return {"tag": tag, "first_build_s": round(first, 2), "cached_s": round(cached, 2), "size_mb": round(size / 1e6)}


def baked_image_time() -> dict:
    """The road not taken: the same image with the venv baked in (then removed again)."""
    import os
    import docker
    from compose import image

    client = docker.from_env()
    base = Path(sys.base_prefix)
    entries = image.prefix_entries(base)
    venv = Path(sys.prefix)
    for root, dirs, files in os.walk(venv):
        dirs.sort()
        entries += [Path(root, d) for d in dirs] + [Path(root, f) for f in sorted(files)]
    libs = image.shared_libraries(base, image.mounted_runtime_dirs())
    size = sum(p.lstat().st_size for p in entries if p.is_file() and not p.is_symlink())
    tag = f"chaosloco-bench-baked:{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    try:
        image._import(client, tag, base, entries, libs)
        took = time.monotonic() - t0
    finally:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
    return {"baked_build_s": round(took, 1), "baked_input_mb": round(size / 1e6)}


def bring_up(learners: int, workdir: Path) -> dict:
    run_id = uuid.uuid4().hex[:8]
    run_dir = workdir / f"up-{learners}-{run_id}"
    journal = Journal(run_dir / "journal.jsonl")
    backend = _backend("compose", journal)
    spec = ClusterSpec(run_id=run_id, run_dir=run_dir, trainer=TrainerConfig(learners=learners, **TRAINER))
    try:
        t0 = time.monotonic()
        backend.start(spec)
        started = time.monotonic()
        joined = _wait_joined(run_dir, learners, 300)
    finally:
        t1 = time.monotonic()
        left = backend.teardown()
        down = time.monotonic() - t1
        journal.close()
    return {"learners": learners, "start_s": round(started - t0, 2), "all_joined_s": round(joined - t0, 2),
            "teardown_s": round(down, 2), "leftovers": left}


def throughput(name: str, learners: int, seconds: float, workdir: Path) -> dict:
    run_id = uuid.uuid4().hex[:8]
    run_dir = workdir / f"tp-{name}-{run_id}"
    journal = Journal(run_dir / "journal.jsonl")
    backend = _backend(name, journal)
    spec = ClusterSpec(run_id=run_id, run_dir=run_dir, trainer=TrainerConfig(learners=learners, **TRAINER))
    try:
        backend.start(spec)
        _wait_joined(run_dir, learners, 300)
        time.sleep(seconds)  # a fixed measurement window of fault-free training is the point here
    finally:
        left = backend.teardown()
        journal.close()
    evs = [e for e in read_events(run_dir / "events.jsonl") if e.get("ev") == "progress"]
    per_learner = {}
    for i in range(learners):
        windows = [e for e in evs if e["learner"] == i][2:]  # skip warm-up windows
        rates = [e["tokens"] / e["wall_s"] for e in windows if e.get("wall_s")]
        per_learner[i] = round(statistics.median(rates), 1) if rates else None
    return {"backend": name, "learners": learners, "seconds": seconds, "tokens_per_s": per_learner,
            "median_tokens_per_s": statistics.median([v for v in per_learner.values() if v]) if any(
                per_learner.values()) else None, "leftovers": left}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("image", "baked", "up", "throughput"))
    p.add_argument("--learners", type=int, nargs="+", default=[4, 8])
    p.add_argument("--tp-learners", type=int, default=2)
    p.add_argument("--tp-seconds", type=float, default=30.0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="chaosloco-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "image"):
            out["image"] = image_times()
            print(json.dumps(out["image"]), flush=True)
        if args.only == "baked":  # not in the default set: it copies gigabytes
            out["baked"] = baked_image_time()
        if args.only in (None, "up"):
            out["bring_up"] = []
            for n in args.learners:
                out["bring_up"].append(bring_up(n, work))
                print(json.dumps(out["bring_up"][-1]), flush=True)
        if args.only in (None, "throughput"):
            out["throughput"] = [throughput(b, args.tp_learners, args.tp_seconds, work) for b in ("local", "compose")]
            for r in out["throughput"]:
                print(json.dumps(r), flush=True)
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
