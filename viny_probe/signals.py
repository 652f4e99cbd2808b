"""SIGINT (Ctrl-C) and SIGTERM (`kill`, a scheduler's stop or time limit, `docker stop`) end a `viny`
command alike: it says what it kept and exits with 128 + the signal number (130 and 143, the shells'
convention), promptly.

While a command runs (``stopping_on_signals``, entered by ``cli.options.interruptible``):

* either signal raises ``Interrupted``, a ``KeyboardInterrupt``: every ``except KeyboardInterrupt`` on
  the way out (a sweep's stage lock released, a fleet's members settled) treats both alike, and the
  command prints its message. A second signal while it unwinds is ignored, so that it does not cut
  that cleanup short.
* Python runs a signal handler only between bytecodes of the main thread, so a main thread inside one
  long C call (a backward pass of a large model on a CPU) or whose unwinding waits for a thread (the
  shutdown of a decode pool) would stop only when that ends. A watchdog thread, woken by the signal
  itself through ``signal.set_wakeup_fd``, gives the main thread ``GRACE_S``; then it runs the
  ``at_forced_exit`` callbacks (a sweep releases its stage locks), prints the message and ends the
  process with ``os._exit``. That is no less safe than SIGKILL, which every viny write is made to
  survive (docs/reliability.md): what was being written is kept as it was or whole.
* ``cli.main`` ends an interrupted process with ``os._exit`` once the message is out: the interpreter's
  teardown (garbage collection of a model and its data, torch's cleanup) took 3-4 s on two shared
  cores, and nothing of viny's is left to write by then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

GRACE_S = 1.0  # for the main thread to unwind by itself before the watchdog ends the process
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_ending = threading.Lock()  # held by whoever prints the message: the main thread or the watchdog
_forced_exit_callbacks: dict[int, Callable[[], None]] = {}


class Interrupted(KeyboardInterrupt):
    """A stop asked for by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_of(error: BaseException) -> int:
    """The signal behind an interrupt: a plain KeyboardInterrupt is Ctrl-C."""
    return getattr(error, "signum", signal.SIGINT)


def exit_status(signum: int) -> int:
    return 128 + signum


def headline(signum: int) -> str:
    """'interrupted.' for Ctrl-C, 'stopped by SIGTERM.' for the other."""
    return "interrupted." if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}."


def at_forced_exit(key: int, callback: Callable[[], None] | None) -> None:
    """Run ``callback`` if the watchdog ends the process (None: forget ``key``'s). Callbacks run in the
    watchdog thread while the main thread is still busy: they must be quick and only undo claims
    (a lock file this process holds), never write results."""
    if callback is None:
        _forced_exit_callbacks.pop(key, None)
    else:
        _forced_exit_callbacks[key] = callback


class _Stopping:
    """The handlers and the watchdog of one command (see the module doc)."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.signum: int | None = None
        self.done = threading.Event()
        self.ended_status: int | None = None

    def handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            return  # stopping already: the cleanup under way is not cut short, the watchdog keeps time
        self.signum = signum
        raise Interrupted(signum)

    def watch(self, wakeup: socket.socket) -> None:
        while True:
            try:
                data = wakeup.recv(64)
            except OSError:
                return
            if not data or 0 in data:
                return  # the command ended
            signums = [s for s in data if s in SIGNALS]
            if signums:
                break
        if self.done.wait(GRACE_S) or not _ending.acquire(blocking=False):
            return
        signum = signums[0]
        for callback in list(_forced_exit_callbacks.values()):
            with contextlib.suppress(Exception):
                callback()
        # os.write, not the console: the main thread may hold the console's lock
        with contextlib.suppress(OSError):
            os.write(sys.stderr.fileno(), f"{headline(signum)} {self.message}\n".encode())
        os._exit(exit_status(signum))

    def end(self, error: BaseException) -> int:
        """The main thread's way out of an interrupt: the signal it answers (the caller prints the
        message). Waits forever if the watchdog is ending the process already (it prints instead)."""
        _ending.acquire()
        self.done.set()
        signum = self.signum or signal_of(error)
        self.ended_status = exit_status(signum)
        return signum


_ended_status: list[int] = []  # the exit status of the command that ended by a signal, for cli.main


@contextlib.contextmanager
def stopping_on_signals(message: str) -> Iterator[_Stopping]:
    """SIGINT and SIGTERM raise ``Interrupted`` in the block, and a watchdog ends the process ``GRACE_S``
    after a signal if the block has not ended by then, printing ``message``. Off the main thread (where
    Python cannot set handlers) the block runs as it is."""
    stopping = _Stopping(message)
    _ended_status.clear()
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return
    wakeup, notify = socket.socketpair()
    notify.setblocking(False)
    previous_handlers = {s: signal.getsignal(s) for s in SIGNALS}
    previous_fd = signal.set_wakeup_fd(notify.fileno(), warn_on_full_buffer=False)
    watchdog = threading.Thread(target=stopping.watch, args=(wakeup,), daemon=True, name="viny-signals")
    watchdog.start()
    try:
        for s in SIGNALS:
            signal.signal(s, stopping.handle)
        yield stopping
    finally:
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_fd)
        stopping.done.set()
        with contextlib.suppress(OSError):
            notify.send(b"\0")
        watchdog.join(timeout=5)
        wakeup.close()
        notify.close()
        if stopping.ended_status is not None:
            _ended_status.append(stopping.ended_status)
            _ending.release()


def exit_now_if_interrupted() -> None:
    """In ``cli.main``: once an interrupted command has said what it kept, end the process without the
    interpreter's teardown (seconds of garbage collection and torch's cleanup; nothing left to write)."""
    if _ended_status:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(_ended_status[-1])


__all__ = [
    "GRACE_S",
    "Interrupted",
    "at_forced_exit",
    "exit_now_if_interrupted",
    "exit_status",
    "headline",
    "signal_of",
    "stopping_on_signals",
]
