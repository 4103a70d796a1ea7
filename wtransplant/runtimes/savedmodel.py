"""TensorFlow SavedModel folders: written with Keras' ``ExportArchive`` (endpoint ``serve``,
signature ``serving_default`` with the Keras input and output names, batch ``None``), run
with ``tf.saved_model.load``. Provenance goes inside the folder (``wtransplant.json``).

Layer 3: TensorFlow is imported inside the functions here. A SavedModel is a program: its
ops are read as data and refused if they touch files, the network or processes
(:func:`wtransplant.safety.graphs.check_savedmodel`) before TensorFlow loads it.
"""

from __future__ import annotations

from pathlib import Path

from wtransplant.errors import InputError, one_line
from wtransplant.quiet_tf import quiet_stderr
from wtransplant.runtimes.base import (
    BY_CONTENT,
    SAVEDMODEL_SIDECAR,
    Artifact,
    Format,
    TensorInfo,
    dims,
    sidecar_order,
)


class SavedModelArtifact(Artifact):
    """A SavedModel directory, run with ``tf.saved_model.load``: its ``serving_default``
    signature, else its first one."""

    kind = "savedmodel"
    runtime = "tf.saved_model"

    def __init__(self, path: Path, *, trust_graph: bool = False):
        from wtransplant.safety.graphs import check_savedmodel

        check_savedmodel(path, trust_graph=trust_graph)  # its ops, read as data, first
        import tensorflow as tf

        display = str(path)
        try:
            with quiet_stderr():
                obj = tf.saved_model.load(str(path))
        except Exception as e:
            raise InputError(f"TensorFlow cannot load this SavedModel: {one_line(e)}",
                             path=display) from None
        self._obj = obj
        sig = obj.signatures.get("serving_default") if hasattr(obj, "signatures") else None
        if sig is None and obj.signatures:
            sig = next(iter(obj.signatures.values()))
        if sig is None:
            raise InputError("the SavedModel has no serving signature", path=display)
        self._sig = sig
        specs = sig.structured_input_signature[1]
        order = sidecar_order(path / SAVEDMODEL_SIDECAR, "inputs", list(specs))
        ins = [TensorInfo(n, dims(specs[n].shape), specs[n].dtype.name) for n in order]
        outs_spec = sig.structured_outputs
        out_order = sidecar_order(path / SAVEDMODEL_SIDECAR, "outputs", sorted(outs_spec))
        outs = [TensorInfo(n, dims(outs_spec[n].shape), outs_spec[n].dtype.name)
                for n in out_order]
        super().__init__(path, ins, outs)

    def _run(self, xs):
        import tensorflow as tf

        feed = {t.name: tf.constant(a) for t, a in zip(self.inputs, xs)}
        y = self._sig(**feed)
        return [y[t.name].numpy() for t in self.outputs]


def tf_specs(src):
    """``tf.TensorSpec`` of each input of the KerasArtifact ``src``, under its name."""
    import tensorflow as tf

    return [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=t.name) for t in src.inputs]


def serving_function(src, model=None):
    """``fn(*inputs) -> {output name: tensor}`` calling the model in inference mode."""
    from wtransplant.runtimes.keras import flatten_outputs

    model = model if model is not None else src.keras_model
    names = src.output_names

    def serve(*args):
        y = model(src.call_arg(list(args)), training=False)
        return dict(zip(names, flatten_outputs(y)))

    return serve


def write_savedmodel(src, tmp: Path, *, model=None) -> None:
    """Write ``model`` (default: the KerasArtifact's own) to the folder ``tmp``."""
    import keras

    model = model if model is not None else src.keras_model
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serving_function(src, model), input_signature=tf_specs(src))
    try:
        with quiet_stderr():
            archive.write_out(str(tmp), verbose=False)
    except Exception as e:
        raise InputError(f"TensorFlow could not write a SavedModel of {src.display}: "
                         f"{one_line(e)}") from None


class SavedModelFormat(Format):
    name = "savedmodel"
    runtime = "tf.saved_model"
    text = "a SavedModel"
    folder = True
    all_name = "saved_model"
    provenance = "inside"
    needs_tensorflow = True
    traced_by_tensorflow = True
    native_backends = ("jax",)

    def sniff(self, path, head):
        if path.is_dir() and ((path / "saved_model.pb").is_file() or
                              (path / "saved_model.pbtxt").is_file()):
            return BY_CONTENT
        return 0

    def precheck(self, path, *, trust_graph=False):
        from wtransplant.safety.graphs import check_savedmodel

        check_savedmodel(path, trust_graph=trust_graph)

    def load(self, path, *, trust_graph=False):
        return SavedModelArtifact(path, trust_graph=trust_graph)

    def check_output_name(self, out):
        from wtransplant.runtimes import formats

        files = {s for f in formats() for s in f.suffixes} | {".pb"}
        if out.suffix.lower() in files:
            raise InputError(f"a SavedModel is a folder; give a folder name, not a "
                             f"{out.suffix} file", path=str(out))
        if out.exists() and not out.is_dir():
            raise InputError("a file of this name exists; a SavedModel is a folder",
                             path=str(out))
        if out.is_dir() and any(out.iterdir()) and not (out / "saved_model.pb").exists():
            raise InputError("a folder that is not a SavedModel is in the way; it would be "
                             "replaced: give a new folder name", path=str(out))

    def write(self, src, tmp, prov, *, model=None, **_):
        write_savedmodel(src, tmp, model=model)
        return {}


FORMATS = (SavedModelFormat(),)
