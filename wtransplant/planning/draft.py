"""``wtransplant spec FILE``: a draft spec from what inspect found.

The draft lists the implied layer stack, an explicit ``weights`` mapping, the convention,
and ``verify`` entries when the file holds reference inputs/outputs. Where the file's
layout is clear (numbered dense layers, Keras files) the draft rebuilds as is. Every choice
the tensors cannot tell (activations, padding, strides, the input's spatial size, the
orientation of a square matrix, a normalisation epsilon) is a guess and is written as one:
``{undecided: [candidates...], why: "..."}`` (see :mod:`wtransplant.planning.spec`), which
``rebuild`` refuses until it is decided (or forced). For dense chains with reference data in
the file, activations are inferred by trying the usual candidates in a float64 forward pass
and written as plain values with a comment saying how they were settled.

Layer 1: h5py/numpy only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from wtransplant.planning.layouts import conventions, layout_for
from wtransplant.planning.layouts.layers import undecided
from wtransplant.planning.spec import flow_yaml
from wtransplant.reading.hints import Hints, LayerHint, build_hints
from wtransplant.reading.loaded import LoadedSource, load_source
from wtransplant.reading.sources import open_source
from wtransplant.safety.text import neutral

HIDDEN_ACTS = ("linear", "relu", "tanh", "sigmoid")
OUTPUT_ACTS = ("linear", "softmax", "sigmoid", "tanh", "relu")
#: candidates written for an activation the file does not record (most likely first)
GUESS_HIDDEN_ACTS = ["relu", "tanh", "sigmoid", "linear"]
GUESS_OUTPUT_ACTS = ["linear", "softmax", "sigmoid"]
WHY_ACT = "the weights do not record activations"


@dataclass
class Draft:
    text: str
    rebuildable: bool  # expected to rebuild as is (no undecided choice)
    #: the draft's guesses, one line each ("fc1: activation"), each written in the text as
    #: {undecided: [...]} (or, where no value can hold it, as a TODO comment)
    todo: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: with reference data (``inputs=``/``expected=``): the parsed :class:`~wtransplant.planning.spec.
    #: Spec`, every choice with its evidence (winner/runner-up errors) and the settling
    #: report (see :mod:`wtransplant.planning.settle`)
    spec: object = None
    choices: list[dict] = field(default_factory=list)
    report: dict | None = None


def draft_spec(path: str | os.PathLike, *, spec_dir: str | os.PathLike | None = None,
               inputs=None, expected=None, input_layout: str | None = None,
               progress=None, budget_s: float | None = None) -> Draft:
    """Draft a spec (YAML text) for the weights file ``path``.

    Args:
        path: the weights file (any format ``inspect`` reads).
        spec_dir: the folder the spec will be saved in (the source path is written
            relative to it; default: the current folder).
        inputs, expected: reference data (a ``.npy`` path, ``data.npz:key``,
            ``data.h5:dataset`` or a tensor of the file): every choice the tensors cannot
            tell is settled by trying its candidates against them (see
            :mod:`wtransplant.planning.settle`); ``expected`` may be a one-item list.
        input_layout: the stored layout of ``inputs`` if channels-first (``nchw``...).
        progress: optional callable taking one line of progress text.
        budget_s: stop searching after this many seconds (what is not settled by then
            stays undecided, and the report says so); None: no time limit.

    Returns:
        A :class:`Draft`: ``text`` (the YAML), ``rebuildable`` (no guess left), ``todo``
        (the guesses, each written as ``{undecided: [...]}``) and ``notes``.

    Raises:
        InputError: the file cannot be read or is not HDF5 (exit 2).
        UnsafeInputError: the file points outside itself (external links...) (exit 2).
    """
    if inputs is not None or expected is not None:
        from wtransplant.planning.settle import draft_settled

        return draft_settled(path, spec_dir=spec_dir, inputs=inputs, expected=expected,
                             input_layout=input_layout, progress=progress,
                             budget_s=budget_s)
    path = Path(path)
    with open_source(path) as src:
        loaded = load_source(src)
        hints = build_hints(loaded.tensors, loaded.detection, loaded.reader)
        base = Path(spec_dir) if spec_dir is not None else Path.cwd()
        rel = os.path.relpath(path.resolve(), base.resolve())
        w = _Writer()
        det = loaded.detection
        w.comment(f"Draft spec written by `wtransplant spec` for {path.name}")
        w.comment(f"format: {det.format}; writer: {det.writer or 'unknown'}")
        w.line("version: 1")
        w.kv("source", rel)
        w.kv("convention", det.convention, f"detected from the {det.format} layout")
        fmt = det.format
        if fmt in ("keras-legacy-model", "keras3-archive"):
            return _draft_self_described(w, loaded)
        if fmt == "keras-legacy-weights":
            app = match_application(loaded)
            if app is not None:
                return _draft_application(w, loaded, app)
        if fmt == "onnx":  # the graph says what the tensors cannot, when it is a chain
            from wtransplant.planning.draftonnx import draft_from_graph

            d = draft_from_graph(w, loaded, src)
            if d is not None:
                return d
        return _draft_layers(w, loaded, hints, src)


# --------------------------------------------------------------------------------------


def _draft_self_described(w, loaded: LoadedSource) -> Draft:
    w.comment("The architecture comes from the file itself (its model config); every")
    w.comment("variable is matched by layer name. Add verify: inputs/expected (a .npy, .npz")
    w.comment("or HDF5 dataset) to check the rebuilt model against the original's outputs.")
    return Draft(w.text(), True, notes=["the file carries its own architecture; "
                                        "`wtransplant rebuild FILE` needs no spec at all"])


def _draft_application(w, loaded, app: dict) -> Draft:
    w.line("model:")
    w.line("  application:")
    w.kv("    name", app["name"], app["why"])
    w.line("    args:")
    for k, v in app["args"].items():
        note = app.get("arg_notes", {}).get(k)
        if k in app.get("todo", []):
            w.kv(f"      {k}", undecided([v], note))
        else:
            w.kv(f"      {k}", v, note)
    w.comment("Keras 2 layer names are kept by keras.applications: every variable is matched")
    w.comment("by name. Add verify: inputs/expected to check parity.")
    todo = [f"application: {n}" for n in app.get("todo", [])]
    return Draft(w.text(), not todo, todo=todo)


def _name_for(lh: LayerHint, i: int, fmt: str, stacked: set[str] = frozenset()) -> str:
    if fmt.startswith("keras"):
        return lh.unit
    if "#" in lh.unit and lh.unit.split("#", 1)[0] not in stacked:
        return re.sub(r"[^A-Za-z0-9_]+", "_", lh.unit.split("#", 1)[0])
    if lh.unit.startswith("layer") and lh.unit[5:].isdigit():
        return f"fc{lh.unit[5:]}" if lh.proposal and lh.proposal.keras_class == "Dense" \
            else f"layer_{lh.unit[5:]}"
    name = re.sub(r"[^A-Za-z0-9_]+", "_", lh.unit).strip("_") or f"layer{i}"
    return name if not name[0].isdigit() else f"l_{name}"


def _draft_layers(w, loaded: LoadedSource, hints: Hints, src) -> Draft:
    fmt = loaded.format
    conv = loaded.detection.convention
    facts = conventions.get_convention(conv)
    todo: list[str] = []
    notes: list[str] = list(hints.notes)
    known = [lh for lh in hints.layers if lh.proposal is not None]
    from wtransplant.planning.draftgraph import heads as _heads
    from wtransplant.planning.draftgraph import place_prelus

    known = place_prelus(known)
    reads, head_outs = _heads(known)
    unmapped = [lh for lh in hints.layers if lh.proposal is None]
    if not known:
        from wtransplant.planning.unnamed import is_unnamed

        weights = [t for t in loaded.tensors if t.name not in (hints.io or {}).values()]
        if is_unnamed(weights):
            return _draft_unnamed(w, weights, notes)
        w.comment("TODO: no layer could be recognised from the tensors; write the model and")
        w.comment("the weights mapping by hand (see `wtransplant inspect` for the tensors)")
        w.line("model:")
        w.line("  input_shape: []          # TODO")
        w.line("  layers: []               # TODO")
        return Draft(w.text(), False, todo=["everything"], notes=notes)
    acts = _infer_activations(loaded, hints, src) if hints.io else None
    if acts is not None:
        notes.append(f"activations inferred from the reference data in the file "
                     f"(max rel err {acts['err']:.2g})")
    # the input shape
    first = known[0].proposal
    in_shape, in_note = _input_shape(known, conv)
    w.line("model:")
    if first.keras_class.startswith("Conv"):
        w.kv("  input_shape", undecided([list(in_shape)], in_note))
        todo.insert(0, "input_shape: the spatial size")
    else:
        w.kv("  input_shape", list(in_shape), in_note)
    if first.keras_class == "Embedding":
        w.kv("  input_dtype", "int32")
    w.line("  layers:")
    entries = _write_layers(w, known, reads, fmt, acts, conv, facts, todo)
    if head_outs:
        stacked = _stacked(known)
        outs = [_name_for(known[j], j, fmt, stacked) for j in head_outs]
        w.kv("  outputs", outs, "parallel heads (widths: each reads what the layer before "
                                "it reads)")
        notes.append("parallel heads became outputs in file order; a Softmax a head applies "
                     "has no weights, so it is not in the draft: add it if the source has one")
    # weights
    w.line("weights:")
    _write_weights(w, entries, hints.orientation, facts, todo)
    _write_tail(w, hints, facts, in_shape, first, notes, unmapped, todo)
    rebuildable = not todo and facts.fact("drafts_rebuild_as_is")
    return Draft(w.text(), rebuildable, todo=todo, notes=notes)


def _stacked(known: list[LayerHint]) -> set[str]:
    """Unit names shared by several layers (a PyTorch RNN's layers: ``rnn#0``, ``rnn#1``)."""
    bases = [lh.unit.split("#", 1)[0] for lh in known if "#" in lh.unit]
    return {b for b in bases if bases.count(b) > 1}


def _write_layers(w, known: list[LayerHint], reads: dict, fmt: str, acts, conv: str, facts,
                  todo: list[str]) -> list[tuple[str, list, LayerHint]]:
    """The ``model.layers`` lines, one per recognised layer (a Flatten where a dense layer
    follows a convolution); returns (name, slots, hint) per layer for the weights."""
    entries: list[tuple[str, list[str], LayerHint]] = []
    prev_kind = ""
    n_dense = sum(1 for lh in known if lh.proposal.keras_class == "Dense")
    dense_i = 0
    stacked = _stacked(known)
    for i, lh in enumerate(known):
        p = lh.proposal
        name = _name_for(lh, i, fmt, stacked)
        if p.keras_class == "Dense" and prev_kind.startswith(("conv", "depthwise")):
            prev_kind = "flatten"
            note = facts.fact("draft_flatten_note")
            w.line("    - {class: Flatten, name: flatten}" + (f"  # {note}" if note else ""))
        args = dict(p.args)
        comment = []
        if p.kind == "prelu" and prev_kind in ("dense", "flatten"):
            args.pop("shared_axes", None)  # after a Linear: one slope per feature
        if i in reads:
            r = reads[i]
            args["inputs"] = "input" if r < 0 else _name_for(known[r], r, fmt, stacked)
            comment.append("a parallel head: reads the same tensor as the layer before it")
        if p.keras_class in ("GRU", "LSTM", "SimpleRNN", "Bidirectional"):
            nxt = known[i + 1].proposal if i + 1 < len(known) else None
            if nxt is not None and nxt.keras_class in ("GRU", "LSTM", "SimpleRNN",
                                                        "Bidirectional"):
                if p.keras_class == "Bidirectional":
                    args["layer"] = {**args["layer"], "return_sequences": True}
                else:
                    args["return_sequences"] = True
        if p.keras_class == "Dense":
            dense_i += 1
            if acts is not None:
                args["activation"] = acts["hidden"] if dense_i < n_dense else acts["output"]
                comment.append("activation inferred from the file's reference data")
            else:
                args["activation"] = undecided(
                    GUESS_HIDDEN_ACTS if dense_i < n_dense else GUESS_OUTPUT_ACTS, WHY_ACT)
                todo.append(f"{name}: activation")
        layout = layout_for(p.keras_class)
        guess = layout.draft_guesses(conv, p, args) if layout is not None else None
        if guess is not None and guess.todo:
            args.update(guess.args)  # the layer type's guesses under this convention
            todo.append(f"{name}: {guess.todo}")
        w.line(f"    - {_flow({'class': p.keras_class, 'name': name, **args})}"
               + (f"  # {'; '.join(comment)}" if comment else ""))
        entries.append((name, list(p.slots.items()), lh))
        if p.kind not in ("batchnorm", "layernorm", "prelu"):
            prev_kind = p.kind or prev_kind
    return entries


def _write_weights(w, entries, square_note: str | None, facts, todo: list[str]) -> None:
    """The ``weights`` lines: target -> source (a square kernel's orientation undecided
    unless the chain of shapes tells it)."""
    for name, slots, lh in entries:
        for var, srcs in slots:
            target = f"{name}/{var}"
            shape = lh.shapes.get("weight")
            if facts.fact("orientation_from_shape") and var == "kernel" and shape \
                    and len(shape) == 2 and shape[0] == shape[1]:
                if square_note:
                    tr = [1, 0] if square_note == "out-by-in" else [0, 1]
                    w.line(f"  {target}: {{from: {_scalar(srcs[0])}, transpose: {tr}}}"
                           f"  # square: orientation {square_note} from the chain")
                else:
                    choice = undecided([{"from": srcs[0], "transpose": [1, 0]},
                                        {"from": srcs[0], "transpose": [0, 1]}],
                                       "a square matrix: its shape does not tell its "
                                       "orientation")
                    w.line(f"  {target}: {_flow(choice)}")
                    todo.append(f"{target}: orientation of a square matrix")
                continue
            val = _scalar(srcs[0]) if len(srcs) == 1 else _flow(srcs)
            w.line(f"  {target}: {val}")


def _write_tail(w, hints: Hints, facts, in_shape, first, notes: list[str], unmapped,
                todo: list[str]) -> None:
    """``verify`` (from the file's reference data, or a commented example), then the notes,
    the tensors no layer rule took, and the guesses left undecided, as comments."""
    if hints.io:
        w.line("verify:")
        w.kv("  inputs", hints.io["inputs"], "reference data found in the file")
        w.kv("  expected", hints.io["expected"])
        if facts.fact("channels_first") and in_shape and len(in_shape) >= 2:
            w.kv("  input_layout", {2: "ncl", 3: "nchw", 4: "ncdhw"}.get(len(in_shape),
                                                                        "nchw"))
    elif facts.fact("channels_first"):
        layout = ", input_layout: nchw" if first.keras_class.startswith("Conv") else ""
        w.comment(f"verify: {{inputs: x.npy, expected: y.npy{layout}}}  # to check parity")
    for n in notes:
        w.comment(f"note: {n}")
    for lh in unmapped:
        w.comment(f"not mapped: {lh.unit} ({', '.join(lh.tensors[:6])}): no layer rule "
                  f"recognises these tensors; map them in `weights` or list them in "
                  f"options.ignore")
    if todo:
        w.comment("guesses, written as {undecided: [...]}: `wtransplant rebuild` refuses the")
        w.comment("spec until each holds one value (or --force, and the result is unverified)")
    for t in todo:
        w.comment(f"undecided: {t}")


def _draft_unnamed(w, weights, notes) -> Draft:
    """An unnamed list (arr_0, arr_1, ...): layers by order and shape, every guess
    undecided (``spec --inputs --expected`` settles them)."""
    from wtransplant.planning.settle import has_undecided, render
    from wtransplant.planning.unnamed import draft_unnamed

    try:
        doc, conv, more = draft_unnamed(weights, None)
    except ValueError as e:
        w.comment(f"TODO: the unnamed tensors do not read as a layer list: {e}")
        w.line("model:")
        w.line("  input_shape: []          # TODO")
        w.line("  layers: []               # TODO")
        return Draft(w.text(), False, todo=["everything"], notes=notes)
    src_line = next(x for x in w.lines if x.startswith("source:"))
    doc["source"] = yaml.safe_load(src_line.split(":", 1)[1])
    header = [x for x in w.lines if x.startswith("#")]
    doc["model"]["input_shape"] = {"undecided": [doc["model"]["input_shape"]],
                                   "why": "give --inputs/--expected to settle it"}
    notes = notes + more + ["give reference data (wtransplant spec FILE --inputs X --expected "
                            "Y) to settle the choices marked undecided"]
    text = render(doc, None, header, notes)
    return Draft(text, False, todo=["unnamed tensors: choices undecided"] if
                 has_undecided(doc) else [], notes=notes)


def _input_shape(known: list[LayerHint], conv: str) -> tuple[list, str | None]:
    p = known[0].proposal
    if p.keras_class.startswith("Conv"):
        nd = int(p.keras_class[4])
        c = p.in_features
        # a Flatten later tells the map size it sees
        side = None
        for lh in known:
            for n in lh.notes:
                m = re.search(r"x (\d+)x(\d+)(?:x(\d+))?: a Flatten", n)
                if m:
                    side = int(m.group(1))
        spatial = [side or 32] * nd
        return [*spatial, c], ("the weights do not fix the spatial size"
                               + (f"; the map entering Flatten is {side}x{side} (the input "
                                  f"is larger if the source pools or strides)" if side
                                  else ""))
    if p.keras_class in ("GRU", "LSTM", "SimpleRNN", "Bidirectional"):
        return [None, p.in_features], "any number of time steps"
    if p.keras_class == "Embedding":
        return [None], "a sequence of token ids"
    return [p.in_features], None


# --------------------------------------------------------------------------------------
# activations from reference data (dense chains)


def _infer_activations(loaded: LoadedSource, hints: Hints, src) -> dict | None:
    dense = [lh for lh in hints.layers if lh.proposal is not None]
    if not dense or any(lh.proposal.keras_class != "Dense" for lh in dense):
        return None
    try:
        x = _read(loaded, src, hints.io["inputs"]).astype(np.float64)
        y = _read(loaded, src, hints.io["expected"]).astype(np.float64)
        layers = []
        for lh in dense:
            slots = lh.proposal.slots
            wt = _read(loaded, src, slots["kernel"][0]).astype(np.float64)
            b = _read(loaded, src, slots["bias"][0]).astype(np.float64).reshape(-1) \
                if "bias" in slots else 0.0
            n_out = lh.proposal.out_features
            if wt.shape[0] == n_out and (wt.shape[1] != n_out or hints.orientation
                                         in ("out-by-in", None)):
                wt = wt.T  # -> (in, out)
            layers.append((wt, b))
    except Exception:
        return None
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        return None
    if x.shape[1] != layers[0][0].shape[0] and x.shape[0] == layers[0][0].shape[0]:
        x, y = x.T, y.T
    best = None
    scale = np.abs(y).max() or 1.0
    for hid in HIDDEN_ACTS:
        for out in OUTPUT_ACTS:
            h = x
            try:
                for i, (wt, b) in enumerate(layers):
                    h = _act(h @ wt + b, hid if i < len(layers) - 1 else out)
            except ValueError:
                return None
            if h.shape != y.shape:
                return None
            err = float(np.abs(h - y).max() / scale)
            if best is None or err < best["err"]:
                best = {"hidden": hid, "output": out, "err": err}
    return best if best is not None and best["err"] < 1e-4 else None


def _read(loaded, src, name):
    return loaded.array(name, src=src)


def _act(z, name):
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


# --------------------------------------------------------------------------------------
# keras.applications fingerprints (Keras 2 weight files keep the applications' names)


def match_application(loaded: LoadedSource) -> dict | None:
    names = [u for u in dict.fromkeys(t.group for t in loaded.tensors)]
    shapes = {t.name: t.shape for t in loaded.tensors}
    s = set(names)
    if {"Conv1", "bn_Conv1", "expanded_conv_depthwise"} <= s:
        filters = shapes.get("Conv1/kernel", (0, 0, 0, 32))[-1]
        alpha = _mnv2_alpha(shapes)
        args = {"alpha": alpha, "input_shape": [224, 224, 3], "weights": None}
        notes = {"alpha": f"from the block widths (first conv has {filters} filters)",
                 "input_shape": "the weights fit any input size; use the original's"}
        if "predictions/kernel" in shapes:
            args["classes"] = int(shapes["predictions/kernel"][-1])
            notes["classes"] = "from the predictions layer"
        else:
            args["include_top"] = False
        return {"name": "MobileNetV2", "args": args, "arg_notes": notes,
                "why": "recognised from the layer names (Conv1, bn_Conv1, expanded_conv_*)",
                "todo": ["input_shape"]}
    if {"block1_conv1", "block5_conv3"} <= s:
        name = "VGG19" if "block5_conv4" in s else "VGG16"
        args = {"weights": None}
        notes = {}
        if "predictions/kernel" in shapes:
            args["classes"] = int(shapes["predictions/kernel"][-1])
            notes["classes"] = "from the predictions layer"
        else:
            args["include_top"] = False
        return {"name": name, "args": args, "arg_notes": notes,
                "why": "recognised from the layer names (block1_conv1 ... block5_conv3)"}
    return None


def _mnv2_alpha(shapes) -> float:
    # Keras' MobileNetV2: block_16_project has _make_divisible(320 * alpha, 8) filters
    out = shapes.get("block_16_project/kernel", (1, 1, 1, 320))[-1]
    for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        pf = int(320 * a)
        v = max(8, int(pf + 4) // 8 * 8)
        if v < 0.9 * pf:
            v += 8
        if v == out:
            return a
    return 1.0


# --------------------------------------------------------------------------------------
# YAML text with comments


_flow = _scalar = flow_yaml


class _Writer:
    def __init__(self):
        self.lines: list[str] = []

    # neutral(): text from the file (names, a userblock, keras_version) never reaches the
    # YAML as a line break or a control character
    def line(self, s: str):
        self.lines.append(neutral(s))

    def comment(self, s: str):
        self.lines.append(f"# {neutral(s)}")

    def kv(self, key: str, value, comment: str | None = None):
        self.lines.append(neutral(f"{key}: {_flow(value)}"
                                  + (f"  # {comment}" if comment else "")))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
