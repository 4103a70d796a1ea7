"""The command line's use of :mod:`wtransplant.safety.isolation`: commands that parse a source
file's metadata run it in a forked child under ``--timeout`` (default 600 s), so a damaged
file that makes the HDF5 library loop or crash is one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import sys

from wtransplant.safety.isolation import DEFAULT_TIMEOUT, preflight, run_isolated

__all__ = ["DEFAULT_TIMEOUT", "guarded", "preflight"]


def guarded(what: str):
    """Decorator for click commands with a ``file`` argument and a ``timeout`` option: the
    whole command (parse, read, print) runs in the child; its exit code is passed on."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            timeout = kwargs.get("timeout")
            timeout = DEFAULT_TIMEOUT if timeout is None else timeout

            def work() -> int:
                fn(*args, **kwargs)
                return 0

            from .main import handle_errors

            code = handle_errors(run_isolated)(work, timeout, display=str(kwargs.get("file")),
                                               what=what)
            sys.exit(code)

        return wrapper

    return deco
