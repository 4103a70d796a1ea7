"""wtransplant: move trained weights out of arbitrary HDF5 files into working Keras 3 models.

Importing this package is cheap: h5py and numpy at most, never TensorFlow or Keras. The
Keras-level API (``rebuild``, ``verify``, ``finetune``, ``export``) is imported on first use.

    >>> import wtransplant
    >>> report = wtransplant.inspect_file("weights.h5")
    >>> report.format
    'torch-state-dict'
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; loaded lazily so that `import wtransplant` stays light
_LAZY = {
    "inspect_file": "wtransplant.inspect",
    "InspectReport": "wtransplant.inspect",
    "open_source": "wtransplant.h5io",
    "load_spec": "wtransplant.spec",
    "Spec": "wtransplant.spec",
    "draft_spec": "wtransplant.draft",
    "rebuild": "wtransplant.transplanting",
    "rebuild_file": "wtransplant.transplanting",
    "transplant": "wtransplant.transplanting",
    "RebuildReport": "wtransplant.transplanting",
    "UndecidedError": "wtransplant.transplanting",
    "WTError": "wtransplant.errors",
    "InputError": "wtransplant.errors",
    "ParityError": "wtransplant.errors",
    "MappingError": "wtransplant.errors",
    "export_model": "wtransplant.export",
    "verify": "wtransplant.verification",
    "VerifyReport": "wtransplant.verification",
    "load_artifact": "wtransplant.artifacts",
    "random_inputs": "wtransplant.artifacts",
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
