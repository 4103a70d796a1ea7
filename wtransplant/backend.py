"""Which Keras backend a command runs under, chosen before Keras is first imported.

``import keras`` on the TensorFlow backend costs seconds (TensorFlow's libraries) before any
work; Keras' own ``numpy`` backend starts in a fraction of that and can build a model, assign
weights, run a forward pass and save a ``.keras`` archive that every backend loads alike.
:func:`choose_backend` picks, for one command, the lightest backend that can do its job:

- ``KERAS_BACKEND`` set by the user always wins;
- a process that already imported Keras keeps its backend (the library never switches the
  backend of its caller's process);
- commands that need TensorFlow itself (SavedModel, ONNX, LiteRT export; training) run on
  TensorFlow;
- otherwise ``numpy`` when every layer is one Keras' numpy backend runs (``NUMPY_LAYERS``),
  ``jax`` when it is installed and a layer is not, TensorFlow when neither is installed.

Only the CLI applies the choice by itself (:func:`apply_backend`, which sets
``KERAS_BACKEND`` before Keras is imported); a library caller may call it too.
:func:`keep_tensorflow_unloaded` stops Keras' serialisation from importing TensorFlow just to
ask whether an object is a ``tf.TensorShape`` (it cannot be one while TensorFlow is not
loaded).

Imports neither Keras nor TensorFlow (layer 1).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import types

#: layer classes Keras' numpy backend builds and runs (forward pass) like TensorFlow does:
#: every fixture spec using them rebuilds to parity on it (tests/test_startup.py); any other
#: class runs under jax (or TensorFlow when jax is not installed)
NUMPY_LAYERS = frozenset({
    "InputLayer", "Dense", "Dropout", "Flatten", "Permute", "ReLU", "PReLU", "Softmax",
    "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
    "MaxPooling2D", "GlobalAveragePooling2D", "ZeroPadding2D", "Cropping2D", "TorchPooling",
    "BatchNormalization", "LayerNormalization", "Embedding",
    "SimpleRNN", "LSTM", "GRU", "Bidirectional", "Add", "Concatenate",
})

#: commands that need TensorFlow's own runtime, whatever the model
TF_COMMANDS = frozenset({"export", "finetune"})

#: what this process chose, for reports: {"backend": name, "why": reason}
_CHOSEN: dict = {}


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def light_backends() -> list[str]:
    """The light backends this environment can start: Keras' numpy backend needs scipy and
    (Keras 3.15 imports its FFT from the jax backend) jax; the jax backend needs jax."""
    out = []
    if _installed("jax") and _installed("jaxlib"):
        if _installed("scipy"):
            out.append("numpy")
        out.append("jax")
    return out


def choose_backend(command: str, layer_classes=None, *,
                   needs_tensorflow: str | None = None) -> tuple[str, str]:
    """``(backend, why)`` for ``command`` (``rebuild``, ``verify``, ``spec``, ``export``,
    ``finetune``). ``layer_classes``: the class names of the model's layers when known
    before Keras starts (from the spec or the file's stored config); None when unknown.
    ``needs_tensorflow``: why this run needs TensorFlow (a SavedModel to load, ...)."""
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env, "KERAS_BACKEND is set"
    if "keras" in sys.modules:
        try:
            return sys.modules["keras"].backend.backend(), "Keras was already imported"
        except Exception:
            pass
    if command in TF_COMMANDS:
        return "tensorflow", f"{command} needs TensorFlow"
    if needs_tensorflow:
        return "tensorflow", needs_tensorflow
    light = light_backends()
    if not light:
        return "tensorflow", "no light backend installed (Keras' numpy backend needs jax " \
                             "and scipy; the jax backend needs jax)"
    if layer_classes is None:
        if "jax" in light:
            return "jax", "the model's layers are not known before it is loaded"
        return "tensorflow", "the model's layers are not known before it is loaded"
    classes = sorted(set(layer_classes))
    other = [c for c in classes if c not in NUMPY_LAYERS]
    if not other and "numpy" in light:
        return "numpy", "every layer runs on Keras' numpy backend (fastest start-up)"
    if "jax" in light:
        return "jax", f"Keras' numpy backend is not checked for {', '.join(other[:5])}"
    return "tensorflow", f"Keras' numpy backend is not checked for {', '.join(other[:5])}"


def spec_layer_classes(spec) -> list[str] | None:
    """The layer classes a spec builds, or None when only Keras can tell (a stored Keras
    config, a keras.applications model)."""
    m = getattr(spec, "model", None)
    if m is None or getattr(m, "layers", None) is None:
        return None
    out = []
    for item in m.layers:
        if not isinstance(item, dict) or not isinstance(item.get("class"), str):
            return None
        out.append(item["class"])
    return out


_CONTAINERS = ("Functional", "Sequential", "Model")


def config_layer_classes(config, _depth: int = 0) -> list[str] | None:
    """The layer classes of a stored Keras model config (``.keras`` config.json, an H5
    ``model_config``), nested models included; None when the config has no layer list."""
    if not isinstance(config, dict) or _depth > 20:
        return None
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return None
    out = []
    for item in layers:
        name = item.get("class_name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            return None
        if name in _CONTAINERS:
            sub = config_layer_classes(item, _depth + 1)
            if sub is None:
                return None
            out.extend(sub)
        else:
            out.append(name)
    return out


def apply_backend(name: str, why: str) -> None:
    """Run Keras on ``name``: sets ``KERAS_BACKEND`` unless Keras is already imported (then
    its backend stays) and records the choice for reports."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = name
    _CHOSEN.update(backend=name, why=why)


def chosen() -> dict:
    """``{"backend": ..., "why": ...}`` as chosen in this process; the running Keras backend
    and "the caller's Keras" when nothing was chosen here."""
    keras = sys.modules.get("keras")
    running = None
    if keras is not None:
        try:
            running = keras.backend.backend()
        except Exception:
            running = None
    if _CHOSEN and (running is None or running == _CHOSEN["backend"]):
        return dict(_CHOSEN)
    if running is not None:
        why = "KERAS_BACKEND is set" if os.environ.get("KERAS_BACKEND") else \
            "Keras' default backend"
        return {"backend": running, "why": why}
    return {"backend": None, "why": "Keras is not imported"}


class _LoadedTensorFlow:
    """Stands for Keras' lazy ``tensorflow`` module in its serialisation code: ``available``
    only once TensorFlow is loaded (before that no object can be a TensorFlow type, so the
    ``isinstance`` checks it guards are False anyway); everything else is delegated, so real
    use still imports TensorFlow."""

    def __init__(self, lazy):
        self._lazy = lazy

    @property
    def available(self):
        return "tensorflow" in sys.modules and self._lazy.available

    def __getattr__(self, name):
        return getattr(self._lazy, name)


def keep_tensorflow_unloaded() -> bool:
    """Keep Keras from importing TensorFlow to serialise a model under another backend
    (``get_config``, ``save``); a no-op under TensorFlow or when Keras' internals differ.
    Returns whether it is in place."""
    keras = sys.modules.get("keras")
    if keras is None or "tensorflow" in sys.modules:
        return False
    try:
        if keras.backend.backend() == "tensorflow":
            return False
        from keras.src.saving import serialization_lib as sl

        tf = getattr(sl, "tf", None)
        if isinstance(tf, _LoadedTensorFlow):
            return True
        # on the class: asking the lazy module itself would import TensorFlow
        if tf is None or not isinstance(getattr(type(tf), "available", None), property):
            return False
        sl.tf = _LoadedTensorFlow(tf)
        return True
    except Exception:  # a Keras version without these internals: TensorFlow loads, still right
        return False


__all__ = ["choose_backend", "apply_backend", "spec_layer_classes", "config_layer_classes", "chosen", "keep_tensorflow_unloaded",
           "light_backends", "NUMPY_LAYERS", "TF_COMMANDS"]


# --------------------------------------------------------------------------------------
# Keras' numpy backend without JAX until JAX is used


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module that is imported on first real use: Keras'
    numpy backend imports ``jax`` and ``jax.lax`` (for convolutions) and the jax backend's
    FFT at import time, half of Keras' start-up, which a model without convolutions never
    uses. Attribute names known to be read at import time answer without loading
    (``subs``: submodules, themselves deferred; ``funcs``: functions, as wrappers that load
    on call); any other attribute loads the real module (all deferred modules leave
    ``sys.modules`` first) and is taken from it, so every use gets real JAX."""

    def __init__(self, name: str, subs: dict | None = None, funcs=()):
        super().__init__(name)
        d = self.__dict__
        d["_wt_subs"] = {k: _Deferred(f"{name}.{k}", funcs=v) for k, v in (subs or {}).items()}
        d["_wt_funcs"] = frozenset(funcs)
        d["_wt_real"] = None

    def _wt_load(self):
        d = self.__dict__
        if d["_wt_real"] is None:
            for k in [k for k, v in list(sys.modules.items()) if isinstance(v, _Deferred)]:
                del sys.modules[k]
            import importlib

            d["_wt_real"] = importlib.import_module(self.__name__)
        return d["_wt_real"]

    def __getattr__(self, attr):
        d = self.__dict__
        if d["_wt_real"] is None:
            if attr in d["_wt_subs"]:
                return d["_wt_subs"][attr]
            if attr in d["_wt_funcs"]:
                def call(*args, **kwargs):
                    return getattr(self._wt_load(), attr)(*args, **kwargs)

                call.__name__ = attr
                return call
            if attr.startswith("__") and attr.endswith("__"):
                raise AttributeError(attr)
        return getattr(self._wt_load(), attr)


#: what Keras 3's numpy backend reads of JAX while it is imported (keras/src/backend/numpy
#: nn.py and math.py, callbacks/orbax_checkpoint.py)
_JAX_AT_IMPORT = {"lax": (), "monitoring": ("record_scalar",)}
_KERAS_JAX_MATH = ("keras.src.backend.jax.math", ("fft", "fft2"))


#: the dtype names only ml_dtypes gives NumPy: a model that names one needs it loaded
ML_DTYPE_NAMES = re.compile(r"bfloat16|float8|float6|float4|u?int4|u?int2\b")


def defer_jax(*, ml_dtypes: bool = False) -> bool:
    """Before ``import keras`` on the numpy backend: JAX is imported only when first used
    (a convolution, an FFT), not by Keras' start-up. With ``ml_dtypes``, so is ml_dtypes
    (its extension registers bfloat16, float8, ... with NumPy, about 0.6 s of Keras'
    start-up): only for a model known to name none of those types (:data:`ML_DTYPE_NAMES`),
    because Keras' numpy backend then asks NumPy for them by name, which only works once
    ml_dtypes is loaded. Returns whether JAX is deferred; a no-op when Keras or JAX is
    already imported or JAX is not installed."""
    if "keras" in sys.modules or "jax" in sys.modules or not _installed("jax"):
        return False
    if ml_dtypes and "ml_dtypes" not in sys.modules and _installed("ml_dtypes"):
        ml = _Deferred("ml_dtypes")
        ml.__spec__ = importlib.util.find_spec("ml_dtypes")
        sys.modules["ml_dtypes"] = ml
    spec = importlib.util.find_spec("jax")
    jax = _Deferred("jax", subs=_JAX_AT_IMPORT)
    jax.__spec__ = spec
    sys.modules["jax"] = jax
    for k, sub in jax._wt_subs.items():
        sys.modules[f"jax.{k}"] = sub
    name, funcs = _KERAS_JAX_MATH
    sys.modules[name] = _Deferred(name, funcs=funcs)
    return True


def jax_loaded() -> bool:
    """Whether the real JAX is imported (not a :func:`defer_jax` stand-in)."""
    m = sys.modules.get("jax")
    return m is not None and not isinstance(m, _Deferred)
