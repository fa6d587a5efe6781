"""Running Docker Compose: ``docker compose`` (v2 plugin) or ``docker-compose`` (v1).

Whichever exists is used, v2 first; ``CHAOSLOCO_COMPOSE`` (e.g. ``docker-compose``)
overrides the choice. Neither, or no daemon behind them, is an ``InfraError``: one line,
exit code 3. Each call is bounded by a timeout and runs in its own session, so a Ctrl-C
aimed at the harness does not cut a ``compose up`` in half (which could leave a
container the daemon creates after our teardown looked); when the harness is
interrupted while a command runs, the command is allowed to finish (bounded) and the
interruption is raised afterwards, so teardown sees everything it has to remove.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from harness.errors import InfraError

ENV_OVERRIDE = "CHAOSLOCO_COMPOSE"
_PROBE_TIMEOUT_S = 20.0
_FINISH_AFTER_INTERRUPT_S = 60.0


@dataclasses.dataclass(frozen=True)
class ComposeCommand:
    argv: tuple[str, ...]  # ("docker", "compose") or ("docker-compose",)
    version: str

    @property
    def label(self) -> str:
        return f"{' '.join(self.argv)} {self.version}"

    def run(self, project: str, file: Path, *args: str, timeout_s: float = 180.0) -> str:
        """``compose -p PROJECT -f FILE ARGS``; returns stdout, raises InfraError on failure."""
        cmd = [*self.argv, "--project-name", project, "--file", str(file), *args]
        return _run(cmd, timeout_s=timeout_s, cwd=str(file.parent))


def _run(cmd: list[str], *, timeout_s: float, cwd: str | None = None) -> str:
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=cwd, start_new_session=True)
    except OSError as e:
        raise InfraError(f"cannot run {shlex.join(cmd[:3])}: {e}") from e
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise InfraError(f"{shlex.join(cmd[:6])} ...: no answer within {timeout_s:.0f} s") from None
    except BaseException:
        # Interrupted (Ctrl-C / SIGTERM in the harness): let compose finish what it is
        # doing to the daemon, so teardown finds it, then pass the interruption on.
        try:
            proc.communicate(timeout=_FINISH_AFTER_INTERRUPT_S)
        except BaseException:
            proc.kill()
            proc.wait()
        raise
    if proc.returncode != 0:
        tail = " | ".join(line for line in (err or out).strip().splitlines()[-3:])
        raise InfraError(f"{shlex.join(cmd[:2])} {' '.join(cmd[6:8])} failed (exit {proc.returncode}): {tail}")
    return out


def _probe(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or "unknown"


def find_compose() -> ComposeCommand:
    """The Compose command to use; InfraError when there is none."""
    override = os.environ.get(ENV_OVERRIDE)
    candidates = [shlex.split(override)] if override else [["docker", "compose"], ["docker-compose"]]
    for argv in candidates:
        if shutil.which(argv[0]) is None:
            continue
        version = _probe(argv)
        if version is not None:
            return ComposeCommand(tuple(argv), version)
    tried = " or ".join(shlex.join(c) for c in candidates)
    raise InfraError(f"no Docker Compose found (tried {tried}); install docker-compose or the compose plugin")
