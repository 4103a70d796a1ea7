"""wtransplant: move trained weights out of arbitrary HDF5 files (and .safetensors, NumPy
.npz/.npy, ONNX) into working Keras 3 models.

Importing this package is cheap: h5py and numpy at most, never TensorFlow or Keras. The
Keras-level API (``rebuild``, ``verify``, ``finetune``, ``export``) is imported on first use.

    >>> import wtransplant
    >>> report = wtransplant.inspect_file("weights.h5")
    >>> report.format
    'torch-state-dict'
"""

from __future__ import annotations

import importlib

from wtransplant.quiet_tf import install as _install_quiet_tf

__version__ = "0.1.0"

# Keras imports TensorFlow lazily under JAX and PyTorch, from wherever it first needs it:
# whoever imports it first, TensorFlow's start-up log lines stay off stderr (quiet_tf.py).
_install_quiet_tf()

# name -> module that defines it; loaded lazily so that `import wtransplant` stays light
_LAZY = {
    "inspect_file": "wtransplant.reading.inspecting",
    "InspectReport": "wtransplant.reading.inspecting",
    "open_source": "wtransplant.reading.h5io",
    "Source": "wtransplant.reading.sources.base",
    "LoadedSource": "wtransplant.reading.loaded",
    "load_source": "wtransplant.reading.loaded",
    "load_spec": "wtransplant.planning.spec",
    "Spec": "wtransplant.planning.spec",
    "draft_spec": "wtransplant.planning.draft",
    "rebuild": "wtransplant.building.transplanting",
    "rebuild_file": "wtransplant.building.transplanting",
    "transplant": "wtransplant.building.transplanting",
    "RebuildReport": "wtransplant.building.transplanting",
    "UndecidedError": "wtransplant.building.transplanting",
    "WTError": "wtransplant.errors",
    "InputError": "wtransplant.errors",
    "ParityError": "wtransplant.errors",
    "MappingError": "wtransplant.errors",
    "export_model": "wtransplant.exporting.export",
    "verify": "wtransplant.checking.verification",
    "VerifyReport": "wtransplant.checking.verification",
    "load_artifact": "wtransplant.runtimes",
    "random_inputs": "wtransplant.runtimes",
    "TrainingError": "wtransplant.errors",
    "finetune": "wtransplant.finetuning.train",
    "FinetuneHistory": "wtransplant.finetuning.train",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'wtransplant' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


def _register_own_layers() -> None:
    """wtransplant's own Keras layers (``wtransplant.layers_custom``) must be registered
    for ``keras.models.load_model`` to read a saved model that uses them, without making
    ``import wtransplant`` import Keras: register now if Keras is loaded, else right after
    Keras is first imported (a one-shot import hook)."""
    import sys

    if "keras" in sys.modules:
        try:
            importlib.import_module("wtransplant.layers_custom")
        except Exception:  # a broken Keras install must not break `import wtransplant`
            pass
        return
    from importlib import util as _util

    # plain classes: importlib.abc's import (importlib.resources, tempfile, ...) would cost
    # every command's start-up
    class _Loader:
        def __init__(self, inner):
            self.inner = inner

        def create_module(self, spec):
            return self.inner.create_module(spec)

        def exec_module(self, module):
            self.inner.exec_module(module)
            try:
                importlib.import_module("wtransplant.layers_custom")
            except Exception:
                pass

    class _Finder:
        def find_spec(self, name, path=None, target=None):
            if name != "keras":
                return None
            try:
                sys.meta_path.remove(self)
            except ValueError:
                return None
            spec = _util.find_spec("keras")
            if spec is None or spec.loader is None:
                return spec
            spec.loader = _Loader(spec.loader)
            return spec

    sys.meta_path.insert(0, _Finder())


_register_own_layers()
