"""Finding and removing what chaosloco left in Docker, by label.

Every container and network of a run carries ``chaosloco=1`` and
``chaosloco.run=<run_id>`` (compose.compose_file). ``labelled`` lists them, for one run
or all; ``remove_labelled`` removes them -- containers first (unpaused, then forcibly
removed with their anonymous volumes), then networks, then volumes. It is what a
backend's teardown falls back on after ``compose down``, and what ``chaosloco down
--all`` calls for whatever a SIGKILLed harness left behind. The runtime image is not
labelled ``chaosloco`` (its label key is ``chaosloco.image``): it is a cache, kept.
"""
from __future__ import annotations

from compose.compose_file import LABEL, RUN_LABEL


def _filters(run_id: str | None) -> dict[str, str]:
    return {"label": f"{RUN_LABEL}={run_id}" if run_id else LABEL}


def labelled(client=None, run_id: str | None = None) -> list[str]:
    """``container NAME (status)``, ``network NAME``, ``volume NAME`` for each labelled thing."""
    from compose.image import docker_client
    client = client or docker_client()
    f = _filters(run_id)
    found = [f"container {c.name} ({c.status})" for c in client.containers.list(all=True, filters=f)]
    found += [f"network {n.name}" for n in client.networks.list(filters=f)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=f)]
    return found


def remove_labelled(client=None, run_id: str | None = None) -> tuple[list[str], list[str]]:
    """Removes everything labelled (for ``run_id``, or every chaosloco run).
    Returns (removed, failed): names, and 'name: why' for what resisted."""
    import docker
    from compose.image import docker_client
    client = client or docker_client()
    f = _filters(run_id)
    removed: list[str] = []
    failed: list[str] = []
    for c in client.containers.list(all=True, filters=f):
        try:
            if c.status == "paused":
                c.unpause()  # a frozen container cannot be killed cleanly on cgroup v1
            c.remove(force=True, v=True)
            removed.append(f"container {c.name}")
        except docker.errors.NotFound:
            removed.append(f"container {c.name}")  # went away on its own meanwhile
        except docker.errors.APIError as e:
            failed.append(f"container {c.name}: {e.explanation or e}")
    for n in client.networks.list(filters=f):
        try:
            n.reload()
            for c in n.containers:  # e.g. a container of another project connected by hand
                n.disconnect(c, force=True)
            n.remove()
            removed.append(f"network {n.name}")
        except docker.errors.NotFound:
            removed.append(f"network {n.name}")
        except docker.errors.APIError as e:
            failed.append(f"network {n.name}: {e.explanation or e}")
    for v in client.volumes.list(filters=f):
        try:
            v.remove(force=True)
            removed.append(f"volume {v.name}")
        except docker.errors.NotFound:
            removed.append(f"volume {v.name}")
        except docker.errors.APIError as e:
            failed.append(f"volume {v.name}: {e.explanation or e}")
    return removed, failed


def remove_all_labelled(client=None) -> list[str]:
    """``chaosloco down --all``: removes every container, network and volume labelled
    ``chaosloco`` (any run). Returns what could NOT be removed ('name: why'); empty is
    clean -- the same convention as a backend's ``teardown``. No daemon: InfraError."""
    _removed, failed = remove_labelled(client)
    return failed
