"""ONNX files: written through a frozen TensorFlow graph and ``tf2onnx.convert.
from_graph_def`` (``Erfc(x)`` rewritten as ``1 - Erf(x)`` for exact GELU; inputs and outputs
renamed to the Keras names, batch dimension ``batch``), checked with
``onnx.checker.check_model(full_check=True)``, run in onnxruntime (CPU). Provenance goes in
the file's ``metadata_props``.

Layer 3: TensorFlow, tf2onnx, onnx and onnxruntime are imported inside the functions here.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np

from wtransplant.errors import InputError, one_line
from wtransplant.quiet_tf import quiet_stderr
from wtransplant.runtimes.base import BY_NAME, Artifact, Format, TensorInfo

_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
              "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool"}
#: the lowest opset written: tf2onnx's converters for Keras' ops (e.g. Split, Squeeze as
#: inputs) need 13
LOWEST_OPSET = 13


class OnnxArtifact(Artifact):
    """An ONNX file run in onnxruntime (CPU)."""

    kind = "onnx"
    runtime = "onnxruntime"

    def __init__(self, path: Path, session=None):
        import onnxruntime as ort

        display = str(path)
        if session is None:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            try:
                with quiet_stderr():  # onnxruntime logs load errors from C++ too
                    session = ort.InferenceSession(str(path), sess_options=so,
                                                   providers=["CPUExecutionProvider"])
            except Exception as e:
                raise InputError(f"onnxruntime cannot load this file: {one_line(e)}",
                                 path=display, detail={"error": str(e)}) from None
        self.session = session
        ins = [TensorInfo(i.name, _ort_dims(i.shape), _ort_dtype(i.type, display))
               for i in session.get_inputs()]
        outs = [TensorInfo(o.name, _ort_dims(o.shape), _ort_dtype(o.type, display))
                for o in session.get_outputs()]
        super().__init__(path, ins, outs)
        meta = session.get_modelmeta()
        self.metadata = dict(meta.custom_metadata_map or {})
        prov = self.metadata.get("wtransplant.provenance")
        if prov:
            with contextlib.suppress(ValueError):
                self.provenance = json.loads(prov)

    def _run(self, xs):
        feed = {t.name: a for t, a in zip(self.inputs, xs)}
        return [np.asarray(y) for y in self.session.run(None, feed)]


def _ort_dtype(t: str, display: str) -> str:
    if t not in _ORT_TYPES:
        raise InputError(f"tensor type {t} is not supported", path=display)
    return _ORT_TYPES[t]


def _ort_dims(shape) -> tuple:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


# --------------------------------------------------------------------------------------
# writing


def version(pkg: str) -> str | None:
    """The installed version of ``pkg``, None if it is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _v

    try:
        return _v(pkg)
    except PackageNotFoundError:
        return None


def check_opset(opset: int | None) -> int:
    """The ONNX opset: default the highest tf2onnx writes (and onnxruntime runs)."""
    import onnx
    from tf2onnx import constants

    top = min(max(constants.OPSET_TO_IR_VERSION), onnx.defs.onnx_opset_version())
    if opset is None:
        return top
    if not LOWEST_OPSET <= int(opset) <= top:
        raise InputError(f"opset {opset}: tf2onnx {version('tf2onnx')} writes opsets "
                         f"{LOWEST_OPSET} to {top}")
    return int(opset)


def _erfc_handler(ctx, node, name, args):
    """tf2onnx has no converter for ``Erfc`` (exact GELU traces to it): 1 - Erf(x)."""
    import tf2onnx

    dtype = ctx.get_dtype(node.input[0])
    np_dtype = tf2onnx.utils.map_onnx_to_numpy_type(dtype)
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(tf2onnx.utils.make_name(f"{node.name}/one"),
                         np.array(1, dtype=np_dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    return node


def to_onnx(src, opset: int):
    """The KerasArtifact's model as an ONNX ModelProto (not yet checked), through a
    frozen graph."""
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from wtransplant.runtimes.keras import flatten_outputs
    from wtransplant.runtimes.savedmodel import tf_specs

    model = src.keras_model
    names = src.output_names

    def call(*args):
        return flatten_outputs(model(src.call_arg(list(args)), training=False))

    fn = tf.function(call, input_signature=tf_specs(src))
    try:
        with quiet_stderr():
            # keep While loops as functions: tf2onnx turns them into ONNX Loop; lowered
            # (v1 Enter/Exit) RNN loops leave TensorList ops it cannot convert
            frozen = convert_variables_to_constants_v2(fn.get_concrete_function(),
                                                       lower_control_flow=False)
    except Exception as e:
        raise InputError(f"{src.display}: TensorFlow could not trace the model for ONNX: "
                         f"{one_line(e)}") from None
    in_names = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    out_names = [t.name for t in frozen.outputs]
    rename = dict(zip(in_names, src.input_names))
    rename.update(zip(out_names, names))
    graph_def = frozen.graph.as_graph_def()
    with quiet_stderr():
        proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, name=model.name, input_names=in_names, output_names=out_names,
            opset=opset, custom_op_handlers={"Erfc": (_erfc_handler, [])},
            tensors_to_rename=rename)
    return proto


def unconverted_nodes(proto) -> list[tuple[str, str]]:
    """(op type, node name) of nodes, in the graph and its subgraphs, that are not ONNX
    operators: what tf2onnx left as TensorFlow ops because it could not convert them."""
    import onnx

    bad = []

    def walk(graph):
        for node in graph.node:
            if node.domain in ("", "ai.onnx", "ai.onnx.ml") and \
                    not onnx.defs.has(node.op_type, node.domain or ""):
                bad.append((node.op_type, node.name))
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(proto.graph)
    return bad


def layer_of(node_name: str, layer_names: set[str]) -> str | None:
    """The Keras layer a TF op belongs to, from its name scope
    (``functional_1/resize_1/resize/ScaleAndTranslate`` -> ``resize``): the deepest scope
    that is a layer name, as is or without the ``_N`` suffix TF adds to reused scopes."""
    parts = node_name.split("/")[:-1]
    for part in reversed(parts):
        if part in layer_names:
            return part
        base = re.sub(r"_\d+$", "", part)
        if base in layer_names:
            return base
    return None


def _layer_names(model) -> set[str]:
    from wtransplant.runtimes.keras import walk_layers

    return {lay.name for lay in walk_layers(model, containers=True)}


def onnx_metadata(prov: dict) -> dict[str, str]:
    """``metadata_props`` of an exported ONNX file (strings only)."""
    src = prov.get("source") or {}
    return {"wtransplant.version": prov["versions"]["wtransplant"],
            "wtransplant.model_sha256": prov["model"].get("sha256") or "",
            "wtransplant.source_sha256": src.get("sha256") or "",
            "wtransplant.source_path": src.get("path") or "",
            "wtransplant.planning.spec": json.dumps(prov.get("spec"), sort_keys=True,
                                                    default=str),
            "wtransplant.versions": json.dumps(prov["versions"], sort_keys=True),
            "wtransplant.provenance": json.dumps(prov, sort_keys=True, default=str)}


def write_onnx(src, tmp: Path, prov: dict, opset: int | None = None) -> int:
    """Convert, check and write; returns the opset written."""
    import onnx

    opset = check_opset(opset)
    proto = to_onnx(src, opset)
    bad = unconverted_nodes(proto)
    if bad:
        names = _layer_names(src.keras_model)
        items = []
        for op, node in bad:
            lay = layer_of(node, names)
            items.append(f"layer {lay!r} ({op})" if lay else f"op {node!r} ({op})")
        items = list(dict.fromkeys(items))
        raise InputError(f"{src.display}: tf2onnx {version('tf2onnx')} cannot convert "
                         f"{'; '.join(items)} to ONNX opset {opset}: tf2onnx has no "
                         f"converter for that TensorFlow op")
    for vi in list(proto.graph.input) + list(proto.graph.output):
        shape = vi.type.tensor_type.shape.dim
        if shape and not shape[0].HasField("dim_value"):
            shape[0].dim_param = "batch"
    proto.doc_string = f"{src.keras_model.name}: exported by wtransplant from {src.display}"
    onnx.helper.set_model_props(proto, onnx_metadata(prov))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError, shape inference errors
        raise InputError(f"{src.display}: the ONNX file tf2onnx wrote is not valid: "
                         f"{one_line(e)}") from None
    onnx.save(proto, str(tmp))
    return opset


class OnnxFormat(Format):
    name = "onnx"
    runtime = "onnxruntime"
    text = "an ONNX model"
    suffixes = (".onnx",)
    all_name = "model.onnx"
    provenance = "metadata"
    traced_by_tensorflow = True
    options = ("opset",)

    def sniff(self, path, head):
        return BY_NAME if path.suffix.lower() == ".onnx" else 0

    def load(self, path, *, trust_graph=False):
        return OnnxArtifact(path)

    def load_failure_detail(self, path, message, src):
        """' (layer 'x', ONNX Resize)' when onnxruntime's message names an operator type
        and the nodes of that type carry a layer's name scope; ' (ONNX Resize node
        'Resize__10')' when tf2onnx gave the node a name of its own."""
        import onnx

        types = set(re.findall(r"in the (\w+) operator|Op \((\w+)\)", message))
        types = {t for pair in types for t in pair if t}
        if not types:
            return ""
        names = _layer_names(src.keras_model)
        found = []
        for node in onnx.load(str(path)).graph.node:
            if node.op_type in types:
                lay = layer_of(node.name, names)
                found.append(f"layer {lay!r}, ONNX {node.op_type}" if lay else
                             f"ONNX {node.op_type} node {node.name!r}")
        return "".join(f" ({x})" for x in dict.fromkeys(found))

    def check_options(self, opts):
        opts["opset"] = check_opset(opts.get("opset"))

    def write(self, src, tmp, prov, *, opset=None, **_):
        return {"opset": write_onnx(src, tmp, prov, opset)}


FORMATS = (OnnxFormat(),)
