"""Run a command in a forked child under a time limit.

Parsing a damaged HDF5 file can make the HDF5 library itself loop forever (seen in its
global-heap reader) or crash, inside C code that Python cannot interrupt. Commands that
read untrusted metadata (``inspect``, ``spec``) therefore run in a child process, forked
before any file is opened and before TensorFlow is loaded; the parent waits with a time
limit and turns a timeout or a crash into one line on stderr and exit code 2.
``--timeout 0`` or ``WTRANSPLANT_NO_WATCHDOG=1`` runs the command in-process instead.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import sys
import time

DEFAULT_TIMEOUT = 600


def _wait(pid: int, timeout: float) -> int | None:
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


def guarded(what: str):
    """Decorator for click commands taking ``timeout`` and a ``file`` argument."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            timeout = kwargs.get("timeout")
            timeout = DEFAULT_TIMEOUT if timeout is None else timeout
            if (not timeout or os.environ.get("WTRANSPLANT_NO_WATCHDOG")
                    or not hasattr(os, "fork") or "tensorflow" in sys.modules):
                return fn(*args, **kwargs)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child does the work and reports through its exit code
                code = 0
                try:
                    fn(*args, **kwargs)
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except BaseException:  # handle_errors (inside) reports everything else
                    code = 3
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            try:
                status = _wait(pid, timeout)
            except KeyboardInterrupt:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise
            file = kwargs.get("file", "?")
            if status is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                sys.stderr.write(
                    f"wtransplant: error: {file}: gave up after {timeout:g} s {what}: the HDF5 "
                    f"library did not finish (a damaged file can make it loop forever); "
                    f"--timeout N allows longer\n")
                sys.exit(2)
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                sys.stderr.write(
                    f"wtransplant: error: {file}: the HDF5 library crashed (signal {-code}) "
                    f"{what}: the file is damaged\n")
                sys.exit(2)
            sys.exit(code)

        return wrapper

    return deco


def preflight(path, timeout: float | None = None, what: str = "reading the file") -> None:
    """Walk a source file's metadata in a forked child first, so that a damaged file that
    makes the HDF5 library loop or crash is caught before TensorFlow is loaded (after
    which forking is unsafe). Returns if the walk finishes; exits 2 (with one line) if it
    fails, loops or crashes."""
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    if (not timeout or os.environ.get("WTRANSPLANT_NO_WATCHDOG") or not hasattr(os, "fork")
            or "tensorflow" in sys.modules):
        return

    def walk_only(file, timeout):
        from wtransplant.h5io import open_source
        from wtransplant.inspect import load_source

        with open_source(file) as src:
            load_source(src)

    from .main import handle_errors

    try:
        guarded(what)(handle_errors(walk_only))(file=str(path), timeout=timeout)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
