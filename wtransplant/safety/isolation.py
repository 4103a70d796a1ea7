"""Run work that parses untrusted HDF5 metadata in a forked child, under a time limit.

A damaged HDF5 file can make the HDF5 C library loop forever (seen in its global-heap
reader) or crash (seen in its variable-length string conversion) while reading metadata,
in code Python cannot interrupt. :func:`run_isolated` forks (before any file is opened and
before TensorFlow is loaded: forking a process with TensorFlow's threads is unsafe), lets
the child do the work, and reports a timeout or a crash as an :class:`InputError`.

Library users who open files from untrusted sources can call :func:`preflight` first:
it walks the file in a child and raises instead of hanging or crashing the caller. The
command line does this for every command that reads a source file.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable

from wtransplant.errors import InputError

DEFAULT_TIMEOUT = 600


def available() -> bool:
    return (hasattr(os, "fork") and not os.environ.get("WTRANSPLANT_NO_WATCHDOG")
            and "tensorflow" not in sys.modules)


def wait_for(pid: int, timeout: float) -> int | None:
    """The child's wait status, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    fd = None
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if fd is not None:
                select.select([fd], [], [], left)
            else:
                time.sleep(min(0.02, left))
    finally:
        if fd is not None:
            os.close(fd)


def run_isolated(work: Callable[[], int], timeout: float, *, display: str,
                 what: str = "reading the file") -> int:
    """Run ``work`` (returning an exit code) in a forked child; return its exit code, or
    raise InputError if it timed out or crashed. Runs in-process if forking is not
    available (Windows, TensorFlow already loaded, WTRANSPLANT_NO_WATCHDOG=1)."""
    if not timeout or not available():
        return work()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = work()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code if isinstance(code, int) else 3)
    try:
        status = wait_for(pid, timeout)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise InputError(f"gave up after {timeout:g} s {what}: the HDF5 library did not "
                         f"finish (a damaged file can make it loop forever); allow longer "
                         f"with --timeout N", path=display)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        raise InputError(f"the HDF5 library crashed (signal {-code}) {what}: the file is "
                         f"damaged", path=display)
    return code


def preflight(path, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Walk a file's metadata in a child process: returns if that finishes cleanly, raises
    InputError (with the reason) if the walk fails, loops or crashes."""
    import tempfile

    with tempfile.TemporaryFile() as msg:
        def work() -> int:
            from wtransplant.reading.loaded import load_source
            from wtransplant.reading.sources import open_source

            try:
                with open_source(path) as src:
                    load_source(src)
            except InputError as e:
                msg.write(str(e).encode("utf-8", "replace"))
                msg.flush()
                return 2
            return 0

        code = run_isolated(work, timeout, display=str(path))
        if code != 0:
            msg.seek(0)
            text = msg.read().decode("utf-8", "replace")
            raise InputError(text or f"cannot read {path} (exit {code})")
