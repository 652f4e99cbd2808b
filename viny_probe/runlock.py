"""Who may write a run folder: one process at a time, by the folder's lock file ``RUN/lock``.

A sweep stage's folder is a run folder, so a stage's lock and its run's lock are one file: a sweep
worker that claimed a stage holds it, and the run it then trains in this process borrows it
(``hold_run_folder``) instead of waiting for itself.

* The lock is created with ``O_CREAT | O_EXCL`` (atomic, also on NFS v3+) and holds the owner's pid,
  host, time and a token. While it is held a heartbeat thread touches it every ``HEARTBEAT_S`` s.
* It is stale when its owner is on this host and its pid is gone, or when nobody touched it for
  ``STALE_S`` s (an owner on another host that died). A stale lock is broken under a second O_EXCL
  file, ``lock.break`` (itself broken after ``BREAK_STALE_S`` s), so that two processes can not both
  break and take it; the one that takes it says so and why.
* A stale lock beside ``final.pt`` is the lock of a finished run killed between writing ``final.pt``
  (written last) and releasing its lock: it is removed without a word (``clear_finished_lock``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from .errors import VinyError
from .signals import at_forced_exit

LOCK_NAME = "lock"
LAST, FINAL = "checkpoint.pt", "final.pt"  # a run's checkpoint of its last epoch, and of its end
HEARTBEAT_S = 30.0
STALE_S = 600.0
BREAK_STALE_S = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(path: Path) -> dict | None:
    """The lock's pid/host/time/token; None when there is no lock, {} when it cannot be read yet."""
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return {}  # being written, or garbage: judged by its age only


def stale_reason(path: Path, stale_s: float = STALE_S) -> str | None:
    """Why the lock at ``path`` is stale (its owner on this host is gone, or it has not been touched for
    ``stale_s`` seconds), or None while it is held (or gone)."""
    info = read_lock(path)
    if info is None:
        return None
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    pid, host = info.get("pid"), info.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return f"its worker, pid {pid} on this host, is gone"
    if age > stale_s:
        return f"its worker (pid {pid} on {host}) has not touched it for {age:.0f} s, over the limit of {stale_s:g} s"
    return None


def lock_is_stale(path: Path, stale_s: float = STALE_S) -> bool:
    return stale_reason(path, stale_s) is not None


# The locks this process holds, by path: a run inside a sweep worker borrows its stage's lock.
_held: dict[Path, StageLock] = {}
_held_guard = threading.Lock()


class StageLock:
    """An O_EXCL lock file holding pid/host/time/token, refreshed by a heartbeat thread while held."""

    def __init__(self, path: Path, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> None:
        self.path, self.heartbeat_s, self.stale_s = Path(path), heartbeat_s, stale_s
        self.token = uuid.uuid4().hex
        self.took_over: str | None = None  # why the stale lock this one replaced was stale
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        info = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "token": self.token}
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info))
        return True

    def _break_stale(self) -> None:
        guard = self.path.with_name(self.path.name + ".break")
        try:
            if time.time() - guard.stat().st_mtime > BREAK_STALE_S:
                guard.unlink(missing_ok=True)  # left by a worker that died while breaking
        except FileNotFoundError:
            pass
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return
        os.close(fd)
        try:
            reason = stale_reason(self.path, self.stale_s)  # again, under the guard: it may be taken by now
            if reason is not None:
                self.path.unlink(missing_ok=True)
                self.took_over = reason
        finally:
            guard.unlink(missing_ok=True)

    def acquire(self) -> bool:
        """Take the lock, breaking it first when stale (``took_over`` then says why it was)."""
        if self._create():
            self._start_heartbeat()
            return True
        if lock_is_stale(self.path, self.stale_s):
            self._break_stale()
            if self._create():
                self._start_heartbeat()
                return True
        self.took_over = None
        return False

    def _start_heartbeat(self) -> None:
        with _held_guard:
            _held[self.path.resolve()] = self
        # A process ended by the signal watchdog (viny_probe.signals) drops its locks on the way out.
        at_forced_exit(id(self), self._remove_own)

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        self._thread = threading.Thread(target=beat, daemon=True, name=f"lock-{self.path.parent.name}")
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with _held_guard:
            if _held.get(self.path.resolve()) is self:
                del _held[self.path.resolve()]
        self._remove_own()
        at_forced_exit(id(self), None)

    def _remove_own(self) -> None:
        info = read_lock(self.path)
        if info is not None and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)


def clear_finished_lock(folder: Path) -> bool:
    """Remove the stale lock of a finished run (``final.pt`` beside it): its process was killed after
    writing ``final.pt``, before releasing the lock. Returns whether one was removed."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    if not (folder / FINAL).exists() or not lock_is_stale(path):
        return False
    breaker = StageLock(path)
    breaker._break_stale()
    return breaker.took_over is not None


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def hold_run_folder(run_dir: Path, say=_to_stderr, advice: str = "choose another --out") -> StageLock | None:
    """Take ``run_dir``'s lock for this process (a stale one taken over, ``say`` told why). None when
    this process holds it already (a sweep worker's claim on its stage): the caller borrows it and
    must not release it. Another live holder is a one-line VinyError naming the folder and its pid,
    ending with ``advice``."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    with _held_guard:
        if path.resolve() in _held:
            return None
    clear_finished_lock(run_dir)
    lock = StageLock(path)
    if lock.acquire():
        if lock.took_over:
            say(f"{run_dir}: took over its stale lock ({lock.took_over})")
        return lock
    info = read_lock(path) or {}
    owner = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
    raise VinyError(
        f"{run_dir} is in use by another viny process ({owner}, lock file {path}); wait for it to end, "
        f"or {advice}"
    )


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a viny training run (config.json with checkpoint.pt or final.pt)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any((folder / n).is_file() for n in (LAST, FINAL))


def refuse_to_overwrite(paths: list[Path], force: bool, what: str = "-o") -> None:
    """A one-line VinyError unless ``force``: a path inside a run folder, or a file that exists already,
    naming the path and ``--force``."""
    if force:
        return
    for path in map(Path, paths):
        for folder in (path, path.parent):
            if is_run_folder(folder):
                raise VinyError(
                    f"{what} {path}: {folder} is a viny run folder (config.json with a checkpoint) and "
                    "writing there would replace its files; choose another output, or pass --force"
                )
        if path.exists():
            raise VinyError(
                f"{what} {path} exists already; choose another output, or pass --force to replace it"
            )
