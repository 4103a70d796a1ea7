"""No TensorFlow log lines on stderr, whichever Keras backend runs and whoever imports it.

TensorFlow 2.21 writes its start-up lines ("WARNING: All log messages before
absl::InitializeLog() is called...", "oneDNN custom operations are on", "Could not find
cuda drivers") from C++ while its libraries load, before ``TF_CPP_MIN_LOG_LEVEL`` is read.
Under the JAX and PyTorch backends TensorFlow is not imported by ``import keras`` but later,
from wherever Keras first needs it (``serialize_keras_object`` checks ``tf.TensorShape``,
``keras.export``, tf2onnx, ``tf.data``), so wrapping one ``import tensorflow`` of ours is
not enough. :func:`install` puts a finder on ``sys.meta_path`` that makes the *first*
import of ``tensorflow``, from any module, run with file descriptor 2 sent to a temporary
file (replayed only if the import fails, or with ``WTRANSPLANT_DEBUG`` set), and sets the
environment variables and Python loggers that keep TensorFlow quiet afterwards.

:func:`quiet_stderr` (C++ logging of TensorFlow, LiteRT and onnxruntime, captured around
one block) and :func:`quiet_logs` (Python warnings and loggers, around one block) are the
one copy the library and the CLI use.

Imports neither TensorFlow nor Keras (safe in layer 1). Set ``WTRANSPLANT_TF_LOGS=1`` to
see TensorFlow's own lines.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import sys

#: environment TensorFlow reads when its libraries load
TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_CPP_MIN_VLOG_LEVEL": "0"}
#: Python loggers TensorFlow, tf2onnx and absl log through
QUIET_LOGGERS = ("tensorflow", "absl", "tf2onnx", "jax._src.xla_bridge")


def _quiet_wanted() -> bool:
    return not os.environ.get("WTRANSPLANT_TF_LOGS")


class _QuietLoader:  # an importlib Loader (importlib.abc's import costs start-up)
    """Delegates to TensorFlow's own loader, with fd 2 captured while its module runs."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        _remove_finder()  # once: its submodules load inside this import
        with quiet_stderr():  # replayed if the import fails (or under WTRANSPLANT_DEBUG)
            self._loader.exec_module(module)
        _quiet_python_loggers()

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _LoggingLoader(_QuietLoader):
    """Delegates to the logging module's loader, then quiets the loggers named in
    QUIET_LOGGERS (so that importing wtransplant does not import logging: start-up)."""

    def exec_module(self, module):
        self._loader.exec_module(module)
        _quiet_python_loggers()


class _QuietTensorFlowFinder:  # an importlib MetaPathFinder
    def find_spec(self, name, path=None, target=None):
        if name not in ("tensorflow", "logging") or name in sys.modules:
            return None
        # stays on sys.meta_path until TensorFlow is imported: importlib.util.find_spec
        # (Keras checks whether TensorFlow is available) asks without importing
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = (_QuietLoader if name == "tensorflow" else _LoggingLoader)(spec.loader)
        return spec


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowFinder)]


def _quiet_python_loggers() -> None:
    import logging

    for name in QUIET_LOGGERS:
        lg = logging.getLogger(name)
        if lg.level < logging.ERROR:
            lg.setLevel(logging.ERROR)


def install() -> None:
    """Keep TensorFlow's log lines off stderr from now on (idempotent, cheap). Call before
    TensorFlow may be imported: by the CLI at start-up, and by the library's modules that
    use Keras or TensorFlow."""
    if not _quiet_wanted():
        return
    for k, v in TF_ENV.items():
        os.environ.setdefault(k, v)
    if "logging" in sys.modules:
        _quiet_python_loggers()  # (else when it is imported: _LoggingLoader)
    if "tensorflow" in sys.modules and "logging" in sys.modules:
        return
    if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


@contextlib.contextmanager
def quiet_stderr(replay: bool | None = None):
    """Send file descriptor 2 to a temporary file while the block runs (TensorFlow,
    LiteRT and onnxruntime log from C++ straight to it). What was captured is replayed if
    the block raises something other than a WTError (which says its own one line) and
    ``replay`` is true (default: if WTRANSPLANT_DEBUG is set)."""
    import tempfile

    from wtransplant.errors import WTError

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as cap:
        os.dup2(cap.fileno(), 2)
        try:
            yield
        except WTError:
            os.dup2(saved, 2)
            raise
        except BaseException:
            os.dup2(saved, 2)
            if replay or (replay is None and os.environ.get("WTRANSPLANT_DEBUG")):
                cap.seek(0)
                sys.stderr.write(cap.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def quiet_logs(*names: str, level: int | None = None):
    """Python warnings off, and the named loggers (default: absl) raised to ``level``
    (default ERROR) while the block runs: Keras, TensorFlow and tf2onnx log what the CLI
    reports itself, in one line."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in (names or ("absl",))]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR if level is None else level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


__all__ = ["install", "TF_ENV", "quiet_stderr", "quiet_logs"]
