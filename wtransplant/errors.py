"""Exceptions that carry an exit code and a one-line message.

Every error a user can cause (a bad file, a bad spec, a shape no rule explains) is a
:class:`WTError`; the CLI prints ``str(err)`` on one line and exits with ``err.exit_code``.
Anything else reaching the CLI is a bug in wtransplant and is reported as such.
"""

from __future__ import annotations

EXIT_OK = 0
#: the run finished but its result is not right: parity failed, or training diverged
EXIT_PARITY = 1
EXIT_INPUT = 2
EXIT_INTERNAL = 3


class WTError(Exception):
    """Base class: a problem the user can act on. ``str()`` is one line."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str, *, path: str | None = None, detail: dict | None = None):
        from wtransplant.safety.text import neutral

        message = neutral(" ".join(str(message).split()))  # one line, no control chars
        if path and not message.startswith(str(path)):
            message = f"{path}: {message}"
        super().__init__(message)
        self.path = path
        self.detail = detail or {}


class InputError(WTError):
    """Bad input: unreadable file, bad spec, unexplained shape. Exit code 2."""

    exit_code = EXIT_INPUT


class UnsafeInputError(InputError):
    """Input refused for safety (external link, Lambda layer, zip path escape...). Exit 2."""


class MappingError(InputError):
    """A Keras variable without a source, a source used twice, a shape no rule explains."""


class ParityError(WTError):
    """The rebuilt or exported model does not compute what the reference computes. Exit 1."""

    exit_code = EXIT_PARITY

    def __init__(self, message: str, *, report=None, **kw):
        super().__init__(message, **kw)
        self.report = report


class TrainingError(WTError):
    """Training failed (the loss became NaN or Inf): nothing is written under the output
    name. Exit code 1, like a parity failure: the input was fine, the result is not."""

    exit_code = EXIT_PARITY


def one_line(e: BaseException) -> str:
    """An exception from a library (Keras, TensorFlow, onnxruntime) as one short line, to
    put inside a WTError's message."""
    return " ".join(str(e).split())[:400] or type(e).__name__
