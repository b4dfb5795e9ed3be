"""prometheus-client multiprocess mode: one directory, every process's samples.

Every platform process (web and its gunicorn workers, the Celery worker and
each of its children, Beat, the MQTT bridge, the signal generator) writes its
metric values to memory-mapped files in ``metrics.multiproc_dir``; the web
``/metrics`` adds them up. See docs/metrics.md for the whole story. Three
things here make that safe beyond one machine's process table:

- **File names unique across containers.** prometheus-client names a
  process's files by its pid. In docker-compose each service has its own pid
  namespace (gunicorn, the Celery parent, Beat and the bridge are all pid 1,
  their children 7, 8...), and they share the directory (a volume): two
  processes would map the same file and overwrite each other's samples. The
  process identifier here is ``<hostname>-<pid namespace inode>-<pid>`` (a
  container's hostname is its id), so names never collide. It contains no
  ``_``: the collector splits file names on it.
- **A liveness lock per process.** Each process holds an exclusive
  ``flock`` on ``<identifier>.lock`` in the directory for its whole life (the
  kernel releases it when the process dies, however it dies; flock works
  across containers sharing the volume). :func:`live_processes` lists the
  holders, so ``manage.py metrics_reset`` refuses to wipe files under
  running processes: a process whose file is deleted keeps writing to the
  unlinked file and its metrics vanish from /metrics until it restarts.
- **Dead processes' live gauges are dropped**: by any process exiting
  normally, a Celery child on ``worker_process_shutdown`` (which the pool
  sends from the child itself, :func:`process_dead`); any process that died
  without a word (OOM killer, hard time limit, crash) at the next scrape, its
  lock being free (:func:`dead_live_gauges_drop`).
- **Short processes leave no idle files**: at exit, a process removes its
  files that hold only zeros (every ``manage.py`` run declares the metrics).

No Django import: settings calls :func:`enable` while it is being loaded.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import shutil
import socket
import time
from pathlib import Path


def _pid_namespace() -> str:
    # Pids are unique within a pid namespace: its inode makes the identifier
    # unique even for containers that share a hostname (network_mode: host,
    # the same hostname: on replicas).
    try:
        return "-" + re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    except OSError:
        return ""


_HOST = (re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host") + _pid_namespace()
_state: dict[str, object] = {}


def process_identifier(pid: int | None = None) -> str:
    """The name of a process's metric files: ``<hostname>-<pid namespace>-<pid>``."""
    return f"{_HOST}-{os.getpid() if pid is None else pid}"


def enable(path: Path) -> None:
    """Put this process in multiprocess mode on ``path`` (idempotent).

    Sets PROMETHEUS_MULTIPROC_DIR, installs the value class with our process
    identifier (which also follows forks: a child writes its own files on its
    first sample) and takes this process's liveness lock.
    """
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if _state.get("path") == path:
        return
    from prometheus_client import values

    # Replaced even if prometheus_client was imported before settings: every
    # metric created from now on is a multiprocess one.
    values.ValueClass = values.MultiProcessValue(process_identifier)
    _state["path"] = path
    _lock_take(path)


def _lock_take(path: Path) -> None:
    """Hold ``<identifier>.lock`` for this process's life (re-taken after a fork)."""
    lock_path = path / f"{process_identifier()}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError:
        return  # best effort: a read-only or odd filesystem must not stop a process
    for attempt in range(5):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            # A scrape may hold it for an instant (a dead process had our pid).
            if attempt == 4:
                os.close(fd)
                return
            time.sleep(0.01)
    _state["lock_fd"], _state["lock_path"] = fd, lock_path


def _files_tidy_at_exit() -> None:
    """At a normal exit: our live gauges go (they describe a running process).
    Short-lived processes (a ``manage.py`` command, a health check) create
    metric files at 0 when the apps declare their metrics: remove ours if they
    hold nothing but zeros, so they do not pile up and slow every scrape. A
    file with any sample set stays (counters must outlive their process).
    The lock file goes too (a dead process's lock is free anyway)."""
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    path = _state.get("path")
    own = process_identifier()
    if not isinstance(path, Path) or _state.get("lock_path") != path / f"{own}.lock":
        return  # not the process that enabled (or took the lock), e.g. a forked child
    multiprocess.mark_process_dead(own, path=str(path))
    for db in path.glob(f"*_{own}.db"):
        try:
            samples = MmapedDict.read_all_values_from_file(str(db))
        except (OSError, ValueError):
            continue
        if all(value == 0 and timestamp == 0 for _key, value, timestamp, _pos in samples):
            db.unlink(missing_ok=True)
    (path / f"{own}.lock").unlink(missing_ok=True)


def _after_fork_in_child() -> None:
    # The child shares its parent's lock (same open file); give it its own so
    # it shows as live under its own name, and the parent's stays the parent's.
    _state.pop("lock_path", None)
    fd = _state.pop("lock_fd", None)
    if fd is not None:
        os.close(fd)  # closing our copy does not release the parent's lock
    if "path" in _state:
        _lock_take(_state["path"])  # type: ignore[arg-type]


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_files_tidy_at_exit)


def live_processes(path: Path) -> list[str]:
    """Identifiers of the processes that currently write metrics into ``path``
    (their lock is held), this process excluded."""
    own = process_identifier()
    return [lock.stem for lock in sorted(path.glob("*.lock")) if lock.stem != own and not _lock_free(lock)]


def wipe(path: Path) -> int:
    """Delete every metric file (and stale lock) in ``path``; returns how many
    files went. Call before the platform's processes start, never while they run
    (see :func:`live_processes`). This process's own files are kept: it is
    alive, and would otherwise write on into deleted files."""
    own = process_identifier()
    removed = 0
    if path.is_dir():
        for entry in path.iterdir():
            if entry.name == f"{own}.lock" or entry.name.endswith(f"_{own}.db"):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    path.mkdir(parents=True, exist_ok=True)
    return removed


def _lock_free(lock_path: Path) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: unknown, keep its samples
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def dead_live_gauges_drop(path: Path) -> list[str]:
    """Drop the live gauges of processes that died without saying so (a Celery
    child killed by the OOM killer or a hard time limit, a crashed bridge):
    their lock is free. Called at each scrape; returns the identifiers dropped."""
    from prometheus_client import multiprocess

    dropped = set()
    for db in path.glob("gauge_live*_*.db"):
        identifier = db.stem.split("_", 2)[2]
        if identifier != process_identifier() and _lock_free(path / f"{identifier}.lock"):
            dropped.add(identifier)
    for identifier in dropped:
        multiprocess.mark_process_dead(identifier, path=str(path))
    return sorted(dropped)


def process_dead(pid: int, path: Path) -> None:
    """Drop the live gauges (``live*`` multiprocess modes) of a process that exited."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(process_identifier(pid), path=str(path))
