"""The one container image, built offline from this machine's own Python runtime.

No registry is reachable, so no base image can be pulled. The image is built ``FROM
scratch``: a root filesystem streamed as a tar straight into ``docker import`` (the
Docker SDK's ``import_image_from_stream``), holding

* the running interpreter's installation (``sys.base_prefix``: the ``python3.11``
  binary, ``libpython``, the standard library -- whose sources are also the trainer's
  corpus, so every file of it comes along) at the same absolute path as on the host,
  minus what nothing at run time needs: the base installation's ``site-packages``
  (the project runs in its own venv), the static ``libpython*.a``, headers, man pages
  (none holds a ``*.py`` file, so the corpus is byte-identical inside and out);
* the shared libraries that the interpreter, its ``lib-dynload`` extensions and every
  extension module in the project's site-packages load (their ``ldd`` closure, system
  libraries only, plus the dynamic loader), each at the path ``ldd`` resolved it to;
* ``/tmp``, a minimal ``/etc/passwd`` / ``/etc/group`` / ``nsswitch.conf``.

What the image deliberately does NOT hold -- the *offline mode*: the project's
site-packages (the venv: 5.5 GB here, torch with its CUDA libraries, which torch's
import needs even on a CPU) and the source tree are bind-mounted read-only at run
time, at their host paths (see ``compose.compose_file``). Baking them in would copy
gigabytes into every fresh CI machine's image store for nothing: the containers run
on the host that has them. Measured on the 2-core CI machine (compose/README.md):
first build about 15 s for about 270 MB, a cached ``ensure_image`` about 2 s (hashing);
baking the venv would first have to tar and copy 5.5 GB (minutes).

Tag: ``chaosloco-runtime:<hash>``, where the hash covers every byte that goes into the
image (file contents, modes, link targets, paths) and this module's own source (the
recipe), so an unchanged runtime reuses the image and any change builds a new one.
Builds are serialised across processes with a file lock (pytest-xdist workers start
clusters at once); stale ``chaosloco-runtime`` tags are removed after a new build.

``compose/Dockerfile`` is the portable alternative (``FROM python:3.11-slim``, the
project pip-installed) for users whose Docker can pull; it cannot be built here.

Why by hand rather than ``docker build``: a Dockerfile build would need the same root
filesystem laid out in a build context first (written to disk, then uploaded, then
copied into a layer: three copies); ``docker import`` of a streamed tar is one.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from harness.errors import InfraError

IMAGE_REPO = "chaosloco-runtime"
RECIPE_VERSION = "1"  # bump to force a rebuild when the recipe changes in a way the source hash misses
_HASH_CHARS = 16
_CHUNK = 1 << 20

# Parts of the base installation nothing needs at run time (relative to sys.base_prefix).
_SKIP_IN_PREFIX = ("include", "share", f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")
# Static libraries for embedding (45 MB); everything else in config-*/ stays, because
# python-config.py there is part of the standard-library corpus the trainer reads.
_SKIP_GLOBS = ("lib/python*/config-*/*.a",)

_ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    # Docker bind-mounts /etc/hosts and /etc/resolv.conf; glibc needs to be told to read them.
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
}


# ---- what goes into the image ----------------------------------------------------------
def site_dirs() -> list[Path]:
    """The running interpreter's site-packages directories (mounted, not baked)."""
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]), Path(paths["platlib"])})


def mounted_runtime_dirs() -> list[Path]:
    """Host directories the containers bind-mount read-only at the same path: the venv
    root when running in one (its ``bin/python`` is the containers' interpreter), else
    the interpreter's own site-packages directories."""
    if sys.prefix != sys.base_prefix:
        return [Path(sys.prefix)]
    return site_dirs()


def container_python() -> str:
    """The interpreter path the containers run (valid inside the image + mounts)."""
    if sys.prefix != sys.base_prefix:
        return str(Path(sys.prefix) / "bin" / "python")
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")


def _skipped(rel: str) -> bool:
    import fnmatch
    return rel in _SKIP_IN_PREFIX or any(fnmatch.fnmatch(rel, g) for g in _SKIP_GLOBS)


def prefix_entries(base_prefix: Path) -> list[Path]:
    """Every file, symlink and directory of the base installation that goes in, sorted."""
    out: list[Path] = [base_prefix]
    for root, dirs, files in os.walk(base_prefix):
        rel_root = os.path.relpath(root, base_prefix)
        keep = []
        for d in sorted(dirs):
            rel = os.path.normpath(os.path.join(rel_root, d))
            p = Path(root, d)
            if _skipped(rel):
                if rel.endswith("site-packages"):
                    out.append(p)  # keep the (empty) directory: the interpreter expects it
                continue
            out.append(p)
            if not p.is_symlink():
                keep.append(d)
        dirs[:] = keep
        out.extend(Path(root, f) for f in sorted(files)
                   if not _skipped(os.path.normpath(os.path.join(rel_root, f))))
    return sorted(out)


def _ldd(paths: list[Path]) -> set[str]:
    """Resolved library paths (plus the dynamic loader) that ``paths`` load."""
    found: set[str] = set()
    for i in range(0, len(paths), 64):
        batch = [str(p) for p in paths[i:i + 64]]
        proc = subprocess.run(["ldd", *batch], capture_output=True, text=True, timeout=120)
        for line in proc.stdout.splitlines():
            line = line.strip()
            if "=>" in line:
                target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
                if target.startswith("/"):
                    found.add(target)
            elif line.startswith("/") and " (" in line:
                found.add(line.split(" (")[0])  # the loader: "/lib64/ld-linux-x86-64.so.2 (0x...)"
    return found


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def shared_libraries(base_prefix: Path, mounted: list[Path]) -> list[str]:
    """System libraries the runtime needs: the ldd closure of the interpreter, its
    extension modules and every extension under the mounted directories, minus what
    lives inside the base prefix (already in) or the mounts (present at run time)."""
    binaries = [p for p in base_prefix.joinpath("bin").iterdir() if p.is_file() and _is_elf(p)]
    for root in [base_prefix / "lib", *mounted]:
        for dirpath, _dirs, files in os.walk(root):
            binaries += [Path(dirpath, f) for f in files if ".so" in f and not Path(dirpath, f).is_symlink()]
    inside = [str(base_prefix), *(str(m) for m in mounted)]
    return sorted(lib for lib in _ldd(binaries) if not any(lib.startswith(p + "/") for p in inside))


# ---- hashing and the tar stream -------------------------------------------------------
def _file_digest(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def content_hash(base_prefix: Path, entries: list[Path], libs: list[str]) -> str:
    h = hashlib.sha256()
    h.update(RECIPE_VERSION.encode())
    h.update(Path(__file__).read_bytes())  # the recipe is part of the content
    for p in entries:
        st = p.lstat()
        h.update(f"\0{p}\0{st.st_mode:o}\0".encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(_file_digest(p))
    for lib in libs:
        h.update(f"\0{lib}\0".encode())
        h.update(_file_digest(Path(lib)))
    for name, text in sorted(_ETC_FILES.items()):
        h.update(f"\0{name}\0{text}".encode())
    return h.hexdigest()[:_HASH_CHARS]


def _parents(path: str) -> Iterator[str]:
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


def write_rootfs_tar(fileobj, base_prefix: Path, entries: list[Path], libs: list[str]) -> None:
    """The root filesystem as a streamed tar (root-owned, modes as on the host)."""
    made_dirs: set[str] = set()

    def add_dir(arc: str, mode: int = 0o755) -> None:
        if arc in made_dirs:
            return
        made_dirs.add(arc)
        info = tarfile.TarInfo(arc)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
        tar.addfile(info)

    def add_parents(arc: str) -> None:
        for parent in _parents(arc):
            add_dir(parent)

    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        add_dir("tmp", 0o1777)
        for name, text in sorted(_ETC_FILES.items()):
            add_parents(name)
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for p in entries:
            arc = str(p).lstrip("/")
            add_parents(arc)
            st = p.lstat()
            if p.is_symlink():
                info = tarfile.TarInfo(arc)
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(p), 0o777
                tar.addfile(info)
            elif p.is_dir():
                add_dir(arc, st.st_mode & 0o7777 | 0o555)
            elif p.is_file():
                info = tarfile.TarInfo(arc)
                info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o7777 | 0o444, int(st.st_mtime)
                with open(p, "rb") as fh:
                    tar.addfile(info, fh)
        for lib in libs:
            arc = lib.lstrip("/")
            add_parents(arc)
            real = Path(os.path.realpath(lib))  # stored as a plain file at the path ldd named
            info = tarfile.TarInfo(arc)
            info.size, info.mode = real.stat().st_size, 0o755
            with open(real, "rb") as fh:
                tar.addfile(info, fh)


def _tar_chunks(base_prefix: Path, entries: list[Path], libs: list[str]) -> tuple[Iterator[bytes], list]:
    """A generator of tar bytes produced by a writer thread through a pipe (bounded
    memory), and a list that receives the writer's exception if it fails."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=_CHUNK) as fh:
                write_rootfs_tar(fh, base_prefix, entries, libs)
        except BaseException as e:  # surfaced by the caller after the import
            failure.append(e)

    thread = threading.Thread(target=writer, name="rootfs-tar", daemon=True)
    thread.start()

    def chunks() -> Iterator[bytes]:
        with os.fdopen(read_fd, "rb", buffering=0) as fh:
            while True:
                data = fh.read(_CHUNK)
                if not data:
                    break
                yield data
        thread.join(timeout=60)

    return chunks(), failure


# ---- build or reuse ---------------------------------------------------------------------
def docker_client(timeout_s: float = 120.0):
    """A Docker SDK client that has answered a ping; InfraError (exit 3) otherwise."""
    import docker
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
        return client
    except Exception as e:  # DockerException, requests' ConnectionError, a missing socket
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise InfraError(f"no Docker daemon answers at {host}: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"chaosloco-image-{os.getuid()}.lock"
    with open(path, "w") as fh:
        deadline = time.monotonic() + 900.0  # a first build takes well under this
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InfraError(f"another process held the image build lock {path} for 15 min") from None
                time.sleep(0.2)  # waiting on another process's build: no event to wait on but the lock
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_memo: dict[tuple, str] = {}


def image_tag(*, base_prefix: Path | None = None, mounted: list[Path] | None = None) -> tuple[str, list[Path], list[str]]:
    """The tag the current runtime hashes to, with the entries and libraries it covers."""
    base_prefix = Path(base_prefix or sys.base_prefix)
    mounted = list(mounted if mounted is not None else mounted_runtime_dirs())
    entries = prefix_entries(base_prefix)
    libs = shared_libraries(base_prefix, mounted)
    return f"{IMAGE_REPO}:{content_hash(base_prefix, entries, libs)}", entries, libs


def ensure_image(client=None, *, log=None) -> str:
    """Returns the runtime image's tag, building it first when no image has it."""
    key = (sys.base_prefix, sys.prefix)
    if key in _memo:
        return _memo[key]
    client = client or docker_client()
    base_prefix = Path(sys.base_prefix)
    tag, entries, libs = image_tag(base_prefix=base_prefix)
    with _build_lock():
        if not _image_exists(client, tag):
            started = time.monotonic()
            _import(client, tag, base_prefix, entries, libs)
            if log:
                log(f"built {tag} in {time.monotonic() - started:.1f} s")
            _remove_stale(client, tag)
    _memo[key] = tag
    return tag


def _image_exists(client, tag: str) -> bool:
    import docker
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _import(client, tag: str, base_prefix: Path, entries: list[Path], libs: list[str]) -> None:
    repo, version = tag.split(":", 1)
    changes = [f"ENV PATH={base_prefix}/bin:/usr/local/bin:/usr/bin:/bin",
               "ENV LANG=C.UTF-8",
               f"LABEL chaosloco.image={repo}",
               f"LABEL chaosloco.content-hash={version}",
               f"WORKDIR /tmp"]
    chunks, failure = _tar_chunks(base_prefix, entries, libs)
    try:
        client.api.import_image_from_stream(chunks, repository=repo, tag=version, changes=changes)
    except Exception as e:
        raise InfraError(f"docker import of {tag} failed: {e}") from e
    if failure:
        raise InfraError(f"writing the root filesystem for {tag} failed: {failure[0]}") from failure[0]
    if not _image_exists(client, tag):
        raise InfraError(f"docker import reported success but {tag} does not exist")


def _remove_stale(client, keep: str) -> None:
    """Older runtime images (a changed runtime): removed unless a container uses them."""
    import docker
    for image in client.images.list(name=IMAGE_REPO):
        if keep in image.tags:
            continue
        for t in image.tags:
            try:
                client.images.remove(t)
            except docker.errors.APIError:
                pass  # still used by a container of a running cluster; the next build retries


def main(argv: list[str] | None = None) -> int:
    """``python -m compose.image [--rebuild]``: build (or reuse) and print the tag and times."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m compose.image", description=main.__doc__)
    p.add_argument("--rebuild", action="store_true", help="remove the current tag first (measures a first build)")
    args = p.parse_args(argv)
    client = docker_client()
    t0 = time.monotonic()
    tag, entries, libs = image_tag()
    t_hash = time.monotonic() - t0
    if args.rebuild and _image_exists(client, tag):
        client.images.remove(tag, force=True)
    t1 = time.monotonic()
    got = ensure_image(client, log=print)
    total = time.monotonic() - t1
    size = client.images.get(got).attrs.get("Size", 0)
    print(f"{got}: {len(entries)} runtime entries, {len(libs)} system libraries, {size / 1e6:.0f} MB; "
          f"hash {t_hash:.1f} s, ensure_image {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
