"""Whether a Docker daemon answers here, for tests that need one to skip with a reason."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def docker_problem() -> str | None:
    """None when a daemon answers a ping; else why not (the skip reason)."""
    try:
        import docker
        client = docker.from_env(timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as e:  # no SDK, no socket, daemon down: all mean "no Docker here"
        return f"{type(e).__name__}: {e}"
    return None


def docker_available() -> bool:
    return docker_problem() is None


def skip_reason() -> str:
    return f"no Docker daemon answers: {docker_problem()}"
