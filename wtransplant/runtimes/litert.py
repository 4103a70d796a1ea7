"""LiteRT (``.tflite``) files: the SavedModel of :mod:`.savedmodel` through
``tf.lite.TFLiteConverter`` with built-in ops only (the interpreter shipped with TensorFlow
has no Flex delegate; recurrent layers with a fixed number of steps are unrolled first),
run in the LiteRT interpreter (``ai_edge_litert`` if installed, else TensorFlow's
``tf.lite.Interpreter``). Provenance goes next to the file (``OUT.wtransplant.json``).

Layer 3: TensorFlow / LiteRT are imported inside the functions here; a file's Flex ops that
touch files are refused before the interpreter loads it.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from wtransplant.errors import InputError, one_line
from wtransplant.quiet_tf import quiet_logs, quiet_stderr
from wtransplant.runtimes.base import (
    BY_CONTENT,
    SIDECAR_SUFFIX,
    Artifact,
    Format,
    TensorInfo,
    Unsupported,
    sidecar_order,
)


class LiteRTUnsupported(Unsupported):
    """The model needs ops the LiteRT interpreter of this TensorFlow cannot run."""


class LiteRTArtifact(Artifact):
    """A ``.tflite`` file run in the LiteRT interpreter, through its first signature."""

    kind = "tflite"
    runtime = "litert"

    def __init__(self, path: Path, *, trust_graph: bool = False):
        from wtransplant.safety.graphs import check_tflite

        check_tflite(path, trust_graph=trust_graph)  # Flex ops that touch files: refused
        display = str(path)
        Interpreter = _litert_interpreter()
        try:
            with quiet_stderr(), quiet_logs():  # tf.lite's deprecation notice
                it = Interpreter(model_path=str(path))
                sigs = it.get_signature_list()
        except Exception as e:
            raise InputError(f"the LiteRT interpreter cannot load this file: {one_line(e)}",
                             path=display) from None
        if not sigs:
            raise InputError("the .tflite file has no signature", path=display)
        self._it = it
        self._sig_key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        runner = it.get_signature_runner(self._sig_key)
        self._runner = runner
        idet = runner.get_input_details()
        odet = runner.get_output_details()
        side = path.with_name(path.name + SIDECAR_SUFFIX)
        in_order = sidecar_order(side, "inputs", list(idet))
        out_order = sidecar_order(side, "outputs", sorted(odet))
        ins = [TensorInfo(n, _lite_dims(idet[n]), np.dtype(idet[n]["dtype"]).name)
               for n in in_order]
        outs = [TensorInfo(n, _lite_dims(odet[n]), np.dtype(odet[n]["dtype"]).name)
                for n in out_order]
        super().__init__(path, ins, outs)

    def _run(self, xs):
        try:
            with quiet_stderr():
                y = self._runner(**{t.name: a for t, a in zip(self.inputs, xs)})
        except RuntimeError as e:  # e.g. Flex ops this interpreter does not link
            raise InputError(f"the LiteRT interpreter cannot run this model: {one_line(e)}",
                             path=str(self.path)) from None
        return [np.array(y[t.name]) for t in self.outputs]


def _lite_dims(det) -> tuple:
    sig = det.get("shape_signature")
    if sig is None or len(sig) == 0:
        sig = det["shape"]
    return tuple(None if int(d) < 0 else int(d) for d in sig)


def _litert_interpreter():
    import warnings

    try:
        from ai_edge_litert.interpreter import Interpreter  # the LiteRT package

        return Interpreter
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow as tf

        return tf.lite.Interpreter


# --------------------------------------------------------------------------------------
# writing


def unrolled_copy(model):
    """A copy of ``model`` with every recurrent layer unrolled (LiteRT's built-in ops have
    no loops over TensorList); None if the model has no recurrent layer or one with an open
    number of steps."""
    import keras

    from wtransplant.runtimes.keras import walk_layers

    rnns = [lay for lay in walk_layers(model) if isinstance(lay, keras.layers.RNN |
                                                             keras.layers.Bidirectional)]
    if not rnns:
        return None
    for lay in rnns:
        try:
            steps = lay.input.shape[1]
        except (AttributeError, ValueError):
            return None
        if steps is None:
            return None

    def clone(layer):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.RNN):
            cfg["unroll"] = True
        elif isinstance(layer, keras.layers.Bidirectional):
            for side in ("layer", "backward_layer"):
                if isinstance(cfg.get(side), dict):
                    cfg[side]["config"]["unroll"] = True
        return layer.__class__.from_config(cfg)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _litert_reason(e: Exception) -> str:
    text = str(e)
    ops = re.findall(r"'(?:tf|tfl)\.(\w+)' op is neither a custom op nor a flex op", text)
    if ops:
        return (f"TensorFlow op(s) {', '.join(sorted(set(ops)))} have no LiteRT built-in "
                f"and the installed interpreter has no Flex delegate")
    return one_line(e)[:300]


class LiteRTFormat(Format):
    name = "tflite"
    runtime = "litert"
    text = "a LiteRT model"
    suffixes = (".tflite",)
    all_name = "model.tflite"
    needs_tensorflow = True
    traced_by_tensorflow = True
    native_backends = ("jax",)

    def sniff(self, path, head):
        return BY_CONTENT if head[4:8] == b"TFL3" else 0

    def precheck(self, path, *, trust_graph=False):
        from wtransplant.safety.graphs import check_tflite

        check_tflite(path, trust_graph=trust_graph)

    def load(self, path, *, trust_graph=False):
        return LiteRTArtifact(path, trust_graph=trust_graph)

    def write(self, src, tmp, prov, **_):
        import tensorflow as tf

        from wtransplant.runtimes.savedmodel import write_savedmodel

        notes = []
        model = unrolled_copy(src.keras_model)
        if model is not None:
            notes.append("recurrent layers unrolled for LiteRT's built-in ops")
        with tempfile.TemporaryDirectory(prefix=".wt-litert-", dir=tmp.parent) as d:
            sm = Path(d) / "saved_model"
            sm.mkdir()
            write_savedmodel(src, sm, model=model)
            try:
                with quiet_stderr():
                    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
                    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                    data = conv.convert()
            except Exception as e:
                raise LiteRTUnsupported(f"{src.display}: cannot convert to LiteRT with "
                                        f"built-in ops: {_litert_reason(e)}") from None
        tmp.write_bytes(data)
        return {"notes": notes}


FORMATS = (LiteRTFormat(),)
