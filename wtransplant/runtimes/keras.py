"""Keras 3 models: ``.keras`` archives, full-model ``.h5`` files (Keras 2 or Keras 3's
legacy format), specs (rebuilt in memory) and models given in memory.

Layer 2: the public ``keras`` API only, imported inside the functions that need it, so that
the registry can sniff files and check archives (h5py, zipfile) before Keras starts.
Safety: a ``.keras`` archive is checked for member paths that escape it and its config for
code (Lambda, custom classes) before Keras opens it, then loaded with ``safe_mode=True``; an
HDF5 file is refused if it points at data in other files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from wtransplant.errors import InputError, UnsafeInputError, one_line
from wtransplant.quiet_tf import install as _quiet_tf
from wtransplant.quiet_tf import quiet_logs
from wtransplant.runtimes.base import (
    BY_CONTENT,
    BY_NAME,
    Artifact,
    Format,
    TensorInfo,
    dims,
    readable_name,
)

_quiet_tf()  # Keras may import TensorFlow lazily under any backend: keep its logs off stderr

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


# --------------------------------------------------------------------------------------
# the loaded model


class KerasArtifact(Artifact):
    """A Keras 3 model: from ``.keras``, ``.h5``, a spec, or given in memory."""

    runtime = "keras"

    def __init__(self, model, path: Path | None = None, kind: str = "model"):
        self.kind = kind
        self.keras_model = model
        ins, outs = keras_signature(model)
        super().__init__(path, ins, outs)
        self._dict_in = _input_structure(model)
        try:  # a functional model built with inputs=[x] expects a list even of one
            self._list_in = isinstance(model.input, (list, tuple))
        except (AttributeError, ValueError):
            self._list_in = False

    def call_arg(self, xs: list):
        """What the Keras model takes: a dict, a list, or one tensor (the structure it was
        built with, so that Keras does not warn about a mismatch)."""
        if self._dict_in:
            return dict(zip(self._dict_in, xs))
        return list(xs) if len(xs) > 1 or self._list_in else xs[0]

    def runner(self, xs):
        arg = self.call_arg(xs)  # a compiled predict step, not an eager call
        return lambda: self.keras_model.predict_on_batch(arg)

    def _run(self, xs):
        import keras

        y = self.keras_model(self.call_arg(xs), training=False)
        return [np.asarray(keras.ops.convert_to_numpy(t)) for t in flatten_outputs(y)]


def from_model(model) -> KerasArtifact:
    """Wrap an in-memory Keras model."""
    return KerasArtifact(model, None, "model")


def flatten_outputs(y) -> list:
    """A model's outputs as a flat list: a dict in its own key order, a list as is."""
    if isinstance(y, dict):
        return list(y.values())
    if isinstance(y, list | tuple):
        return list(y)
    return [y]


def walk_layers(model, *, containers: bool = False) -> list:
    """Every layer of ``model``, nested models opened (depth first, in order); the nested
    models themselves are listed too (before their layers) with ``containers``."""
    import keras

    out = []
    for lay in model.layers:
        if isinstance(lay, keras.Model) and not isinstance(lay, keras.layers.Bidirectional):
            if containers:
                out.append(lay)
            out.extend(walk_layers(lay, containers=containers))
        else:
            out.append(lay)
    return out


def _input_structure(model) -> list[str] | None:
    """The keys, when the model takes a dict of inputs."""
    try:
        struct = model.input
    except (AttributeError, ValueError):
        return None
    return list(struct) if isinstance(struct, dict) else None


def keras_signature(model) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of a Keras model, with readable, unique names."""
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise InputError(f"model {model.name!r} has no known inputs (a subclassed model that "
                         f"was never built); wtransplant works with functional and Sequential "
                         f"models")
    keys = _input_structure(model)
    taken: set[str] = set()
    ins = []
    highs = _int_input_ranges(model)
    for i, t in enumerate(inputs):
        raw = keys[i] if keys else t.name
        dt = str(t.dtype) if t.dtype is not None else "float32"
        high = highs.get(t.name) if np.dtype(dt).kind in "iu" else None
        if high is None and np.dtype(dt).kind in "iu":
            high = highs.get("*")
        ins.append(TensorInfo(readable_name(raw, taken), dims(t.shape), dt, high))
    outs_t = list(model.outputs)
    names = _output_names(model, len(outs_t))
    outs = [TensorInfo(readable_name(n, taken), dims(t.shape),
                       str(t.dtype) if t.dtype is not None else "float32")
            for n, t in zip(names, outs_t)]
    return ins, outs


def _output_names(model, n: int) -> list[str]:
    try:
        struct = model.output
    except (AttributeError, ValueError):
        struct = None
    if isinstance(struct, dict):
        return list(struct)
    names = getattr(model, "output_names", None)
    if names and len(names) == n:
        return list(names)
    if n == 1 and model.layers:
        return [model.layers[-1].name]
    return [f"output_{i}" for i in range(n)]


def _int_input_ranges(model) -> dict:
    """input tensor name -> exclusive upper bound of valid values, read from the Embedding
    (or CategoryEncoding) layers that take that input directly; key '*' is the smallest bound
    over all such layers in the model (used for integer inputs not directly connected)."""
    out: dict = {}
    bounds = []
    for lay in walk_layers(model):
        cfg_name = type(lay).__name__
        high = None
        if cfg_name == "Embedding":
            high = int(lay.input_dim)
        elif cfg_name == "CategoryEncoding":
            high = int(lay.num_tokens)
        if high is None:
            continue
        bounds.append(high)
        try:
            name = lay.input.name
        except (AttributeError, ValueError):
            continue
        out[name] = min(high, out.get(name, high))
    if bounds:
        out["*"] = min(bounds)
    return out


# --------------------------------------------------------------------------------------
# stored configs, read before Keras starts (h5py, zipfile)


def keras_archive_config(path: Path) -> dict:
    """The config of a ``.keras`` archive, after refusing member paths that escape it
    (zip slip). h5py/zipfile only: cheap, and run before Keras starts."""
    from wtransplant.reading.h5io import read_archive_info

    display = str(path)
    try:
        with zipfile.ZipFile(path, "r") as zf:
            info = read_archive_info(zf, display)
    except zipfile.BadZipFile as e:
        raise InputError(f"a zip archive that cannot be read ({e})", path=display) from None
    if info.config is None or "model.weights.h5" not in info.members:
        raise InputError("not a Keras archive (no config.json and model.weights.h5 inside)",
                         path=display)
    return info.config


def legacy_h5_config(path: Path) -> dict:
    """The ``model_config`` of a full-model HDF5 file, after refusing files that point at
    data in other files. h5py only: cheap, and run before Keras starts."""
    from wtransplant.reading.h5io import open_source
    from wtransplant.reading.inspecting import load_source, outside_references

    display = str(path)
    with open_source(path) as src:
        loaded = load_source(src)
        outside = outside_references(loaded.tree)
        if outside:
            raise UnsafeInputError(f"{outside[0]}: data outside the file, refused",
                                   path=display)
        cfg = loaded.tree.root_attrs.get("model_config")
        fmt = loaded.format
    if fmt != "keras-legacy-model" or cfg is None:
        raise InputError(f"an HDF5 file ({fmt}) without a model config: it holds weights "
                         f"only; rebuild it first (`wtransplant spec {path}` drafts a spec)",
                         path=display)
    try:
        from wtransplant.safety.configs import loads

        return loads(cfg, f"{display}: model_config")
    except (TypeError, ValueError) as e:
        raise InputError(f"model_config attribute is not valid JSON: {e}", path=display) \
            from None


# --------------------------------------------------------------------------------------
# loading and saving


def load_keras_archive(path: Path):
    """A ``.keras`` archive, checked (zip paths, a declared size that would be a zip bomb,
    links out of its weights file, config code) and loaded with safe_mode: the one place
    wtransplant opens a ``.keras`` model."""
    from wtransplant.building.keras_model import check_config_safe
    from wtransplant.reading.h5io import open_source

    config = keras_archive_config(path)
    with open_source(path):  # the weights file inside, opened as any input is
        pass
    check_config_safe(config, str(path))
    import keras

    try:
        with quiet_logs():
            return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:
        raise InputError(f"Keras cannot load this archive: {one_line(e)}",
                         path=str(path)) from None


def load_keras_h5(path: Path, *, rebuild_fallback: bool = True):
    """A full-model HDF5 file (Keras 2 or Keras 3 legacy format). Returns (model, note,
    rebuild_report or None). Files Keras 3 refuses (Keras 2 RNNs: ``time_major``) are
    rebuilt from their config and weights by ``rebuild_file`` unless ``rebuild_fallback``
    is false."""
    from wtransplant.building.keras_model import check_config_safe

    display = str(path)
    check_config_safe(legacy_h5_config(path), f"{display}: model_config")
    import keras

    try:
        with quiet_logs():
            model = keras.models.load_model(str(path), compile=False, safe_mode=True)
        return model, None, None
    except Exception as e:
        first = one_line(e)[:160]
        if not rebuild_fallback:
            raise InputError(f"Keras cannot load this file: {first}", path=display) from None
    from wtransplant.building.transplanting import rebuild_file

    model, report = rebuild_file(path, progress=False)
    return model, (f"keras.models.load_model refused the file ({first}); rebuilt it from "
                   f"its config and weights with wtransplant rebuild"), report


def save_model_file(model, path: str | Path) -> None:
    """``model.save(path)`` (``.keras`` or legacy ``.h5``, by suffix) without Keras'
    warning that HDF5 is a legacy format: the user asked for it by name."""
    with quiet_logs():
        model.save(str(path))


# --------------------------------------------------------------------------------------
# formats


def _has_hdf5_signature(p: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(str(p)))
    except Exception:
        return False


class _KerasFile(Format):
    runtime = "keras"
    keras_source = True

    def write(self, src, tmp, prov, **_):
        try:
            save_model_file(src.keras_model, tmp)
        except Exception as e:  # e.g. a layer the legacy HDF5 format cannot describe
            raise InputError(f"{src.display}: Keras could not save the model as "
                             f"{tmp.suffix}: {one_line(e)}") from None
        return {}


class KerasFormat(_KerasFile):
    name = "keras"
    text = "a Keras archive"
    suffixes = (".keras",)
    all_name = "model.keras"

    def sniff(self, path, head):
        if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return 0
        if path.suffix.lower() != ".keras":  # Keras picks its reader by suffix
            raise InputError(f"a zip archive named {path.name!r}: Keras reads archives only "
                             f"as .keras files; rename it", path=str(path))
        return BY_CONTENT

    def precheck(self, path, *, trust_graph=False):
        keras_archive_config(path)

    def stored_config(self, path):
        return keras_archive_config(path)

    def load(self, path, *, trust_graph=False):
        return KerasArtifact(load_keras_archive(path), path, "keras")


class H5Format(_KerasFile):
    name = "h5"
    text = "a Keras full-model HDF5 file"
    suffixes = (".h5", ".hdf5")
    all_name = "model.h5"

    def sniff(self, path, head):
        from wtransplant.reading.h5io import HDF5_SIGNATURE

        if not (head.startswith(HDF5_SIGNATURE) or
                (path.suffix.lower() in (".h5", ".hdf5") and _has_hdf5_signature(path))):
            return 0
        if path.suffix.lower() == ".keras":  # ...nor an HDF5 file named .keras
            raise InputError("an HDF5 file named .keras: Keras would read it as an archive; "
                             "rename it to .h5", path=str(path))
        return BY_CONTENT

    def precheck(self, path, *, trust_graph=False):
        from wtransplant.safety.isolation import preflight

        preflight(path)  # in a child process: a damaged file may make HDF5 loop or crash
        legacy_h5_config(path)

    def stored_config(self, path):
        return legacy_h5_config(path)

    def load(self, path, *, trust_graph=False):
        model, note, report = load_keras_h5(path)
        art = KerasArtifact(model, path, "h5")
        if note:
            art.notes.append(note)
        if report is not None:
            art.provenance = {"source": report.source, "spec": report.spec}
        return art

    def reload(self, path):
        return KerasArtifact(load_keras_h5(path, rebuild_fallback=False)[0], path, "h5")


class SpecFormat(Format):
    """A spec: the model is rebuilt in memory (and checked against the spec's data)."""

    name = "spec"
    runtime = "keras"
    text = "a spec"
    keras_source = True

    def sniff(self, path, head):
        return BY_NAME if path.suffix.lower() in SPEC_SUFFIXES else 0

    def load(self, path, *, trust_graph=False):
        from wtransplant.building.transplanting import rebuild

        model, report = rebuild(path, progress=False)
        art = KerasArtifact(model, path, "spec")
        art.provenance = {"source": report.source, "spec": report.spec,
                          "parity": report.parity.to_dict() if report.parity else None}
        art.notes.append("rebuilt from the spec: "
                         + (report.parity.summary() if report.parity else report.parity_note))
        return art


FORMATS = (KerasFormat(), H5Format(), SpecFormat())
