"""What architecture a file's tensors imply.

Tensors are grouped into units (one per source layer, by the format reader), each unit is
recognised by the layout registry (``Linear 256 -> 32``, ``BatchNorm(8)``, ``GRU input 6,
hidden 8``), and units are put in chain order: numbered layers by number, named modules in
their file order within a block and blocks linked where one's output size is the next
one's input. Where the chain is clear the implied stack of sizes is given (``6 -> 12 -> 12
-> 3``). For the ``plain`` convention the orientation of 2-D weights (out-by-in or in-by-out)
is decided from the chain and the bias sizes, or reported as undecided.

Everything here is a hint for ``inspect`` and the ``spec`` drafter; the rebuild never trusts
a hint without the spec saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from wtransplant.planning.layouts import Proposal, Unit, recognize
from wtransplant.planning.layouts.conventions import chain as convention_chain
from wtransplant.reading.formats import IO_NAMES, Detection, FormatReader, SourceTensor


@dataclass
class LayerHint:
    unit: str
    tensors: list[str]
    shapes: dict
    proposal: Proposal | None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"unit": self.unit, "tensors": self.tensors,
                "shapes": {k: list(v) for k, v in self.shapes.items()},
                "proposal": self.proposal.to_dict() if self.proposal else None,
                "notes": list(self.notes)}


@dataclass
class Hints:
    layers: list[LayerHint]
    chain: list[int] | None = None  # implied sizes, input first
    orientation: str | None = None  # plain/matlab 2-D weights: out-by-in | in-by-out
    io: dict | None = None  # {"inputs": name, "expected": name} reference data in the file
    notes: list = field(default_factory=list)
    ignored: list = field(default_factory=list)  # bookkeeping tensors (num_batches_tracked)

    @property
    def chain_text(self) -> str | None:
        return " -> ".join(map(str, self.chain)) if self.chain else None

    def to_dict(self) -> dict:
        return {"layers": [h.to_dict() for h in self.layers], "chain": self.chain,
                "chain_text": self.chain_text, "orientation": self.orientation,
                "io": self.io, "ignored": self.ignored, "notes": list(self.notes)}


#: files with more groups of tensors than this are not a model's layer list; hints are
#: computed for the first ones only (keeps inspect fast on huge files)
MAX_UNITS = 4096


def split_io(tensors: list[SourceTensor]) -> tuple[list[SourceTensor], dict | None]:
    """Separate reference inputs/outputs stored in the file (X/Y, io/x, inputs/outputs)
    from the weights."""
    io = [t for t in tensors if IO_NAMES.match(t.name)]
    ins = [t for t in io if _io_kind(t.name) == "in"]
    outs = [t for t in io if _io_kind(t.name) == "out"]
    if len(ins) == 1 and len(outs) == 1:
        keep = [t for t in tensors if t not in (ins[0], outs[0])]
        return keep, {"inputs": ins[0].name, "expected": outs[0].name}
    return tensors, None


def _io_kind(name: str) -> str:
    base = name.lower().replace("io/", "").replace("io.", "").replace("io_", "")
    if base.startswith(("x", "input")) or base.endswith("x"):
        return "in"
    return "out"


def build_hints(tensors: list[SourceTensor], det: Detection, reader: FormatReader) -> Hints:
    weights, io = split_io(tensors)
    conv = det.convention
    ignored = [t.name for t in weights if t.role == "num_batches_tracked"]
    weights = [t for t in weights if t.name not in ignored]
    units = [u for u in reader.units(weights) if u.tensors]
    skipped = 0
    if len(units) > MAX_UNITS:  # not a model's layer list: hints for the first ones only
        skipped = len(units) - MAX_UNITS
        units = units[:MAX_UNITS]
    layers = []
    for u in units:
        p = recognize(u, conv)
        layers.append(LayerHint(u.key, u.names(), {r: t.shape for r, t in u.tensors.items()},
                                p))
    hints = Hints(layers=layers, io=io, ignored=ignored)
    if skipped:
        hints.notes.append(f"{skipped + MAX_UNITS} groups of tensors: hints cover the first "
                           f"{MAX_UNITS} only")
    family = set(convention_chain(conv))  # a registered convention behaves as its ancestors here
    if family & {"plain", "matlab"}:
        _numbered_chain(hints, units, "matlab" if "matlab" in family else "plain")
    else:
        if "torch" in family:  # Keras files list layers in model order already
            _order_blocks(hints)
        _chain(hints)
    return hints


# --------------------------------------------------------------------------------------
# named modules (torch, keras): order blocks, find flattens


def _block(unit: str) -> str:
    return unit.split(".", 1)[0].split("#", 1)[0].split("/", 1)[0]


def _order_blocks(h: Hints) -> None:
    """Within a top-level block (``features``, ``classifier``) the file's natural order is
    the module order; across blocks HDF5 sorts names alphabetically, so link blocks by
    sizes: a block goes after the one whose last output feeds its first input."""
    blocks: dict[str, list[LayerHint]] = {}
    for lh in h.layers:
        blocks.setdefault(_block(lh.unit), []).append(lh)
    if len(blocks) < 2:
        return
    ends = {}
    for b, lhs in blocks.items():
        ps = [x.proposal for x in lhs if x.proposal]
        if ps:
            # a trailing norm layer keeps the size; the kind that matters is the layer before
            core = [p for p in ps if p.kind not in ("batchnorm", "layernorm")] or ps
            last = Proposal(core[-1].keras_class, {}, {}, "", core[-1].in_features,
                            ps[-1].out_features, kind=core[-1].kind)
            ends[b] = (ps[0], last)
    if len(ends) != len(blocks):
        return
    feeds = {b: [c for c in blocks if c != b and _fits(ends[b][1], ends[c][0])]
             for b in blocks}
    starts = [b for b in blocks if not any(b in feeds[c] for c in blocks if c != b)]
    if len(starts) != 1:
        h.notes.append("the order of the top-level blocks could not be told from sizes; "
                       "they are listed in file (alphabetical) order")
        return
    order, cur = [starts[0]], starts[0]
    while len(order) < len(blocks):
        nxt = [c for c in feeds[cur] if c not in order]
        if len(nxt) != 1:
            break
        order.append(nxt[0])
        cur = nxt[0]
    if len(order) != len(blocks):
        h.notes.append("the order of the top-level blocks could not be told from sizes; "
                       "they are listed in file (alphabetical) order")
        return
    if order != list(blocks):
        h.notes.append(f"blocks ordered by their sizes: {' -> '.join(order)} (the file lists "
                       f"names alphabetically, which loses the module order)")
    h.layers = [lh for b in order for lh in blocks[b]]


def _fits(last: Proposal, first: Proposal) -> bool:
    """Can ``first`` (a block's first layer) follow ``last`` (another block's last)?"""
    out_f, in_f = last.out_features, first.in_features
    if out_f is None or in_f is None:
        return False
    if in_f == out_f:
        return True
    # a Flatten of a conv map into a dense layer
    return first.kind == "dense" and last.kind.startswith("conv") and in_f % out_f == 0


def _chain(h: Hints) -> None:
    sizes: list[int] = []
    prev = None
    prev_kind = ""
    for lh in h.layers:
        p = lh.proposal
        if p is None:
            lh.notes.append("not recognised as a layer")
            continue
        if prev is not None and p.in_features is not None and p.in_features != prev:
            if p.kind == "dense" and p.in_features % prev == 0 and prev_kind.startswith(
                    "conv"):
                k = p.in_features // prev
                nd = int(prev_kind[4]) if prev_kind[4:5].isdigit() else 2
                side = round(k ** (1 / nd))
                if side ** nd == k:
                    shape = "x".join([str(side)] * nd)
                    lh.notes.append(f"takes {p.in_features} = {prev} channels x {shape}: a "
                                    f"Flatten of a {prev}x{shape} map "
                                    f"({'C,H,W order: PyTorch' if nd == 2 else 'channels-first'}"
                                    f" flatten)")
                else:
                    lh.notes.append(f"takes {p.in_features} = {prev} channels x {k} positions: "
                                    f"a Flatten of the conv map (spatial shape to decide)")
            else:
                lh.notes.append(f"input {p.in_features} does not follow the previous output "
                                f"{prev}")
        if not sizes and p.in_features is not None:
            sizes.append(p.in_features)
        if p.out_features is not None and p.kind not in ("batchnorm", "layernorm"):
            sizes.append(p.out_features)
        if p.out_features is not None:
            prev = p.out_features
        prev_kind = p.kind or prev_kind if p.kind not in ("batchnorm", "layernorm") \
            else prev_kind
    if len(sizes) >= 2:
        h.chain = sizes


# --------------------------------------------------------------------------------------
# numbered layers (plain, MATLAB/Octave): orientation from the chain and biases


def _numbered_chain(h: Hints, units: list[Unit], conv: str) -> None:
    dense = [(u, lh) for u, lh in zip(units, h.layers)
             if "weight" in u.tensors and len(u.shape("weight")) == 2]
    if not dense:
        for lh in h.layers:
            if lh.proposal is None:
                lh.notes.append("not recognised as a layer")
        return
    shapes = [u.shape("weight") for u, _ in dense]
    biases = [math.prod(u.shape("bias")) if "bias" in u.tensors else None for u, _ in dense]
    votes = {"out-by-in": _consistent(shapes, biases, 0),
             "in-by-out": _consistent(shapes, biases, 1)}
    ok = [k for k, v in votes.items() if v]
    if conv == "matlab":
        orientation = "out-by-in"
        if ok == ["in-by-out"]:
            h.notes.append("the sizes chain only if the dense weights are in-by-out (x*W), "
                           "not MATLAB's usual out-by-in (W*x): say transpose in the spec")
            orientation = "in-by-out"
    elif len(ok) == 1:
        orientation = ok[0]
        h.notes.append(f"2-D weights are {orientation}: the only orientation under which "
                       f"consecutive sizes{' and bias lengths' if any(biases) else ''} agree")
    elif not ok:
        h.notes.append("the numbered weights do not form a chain in either orientation")
        orientation = None
    else:
        orientation = None
        h.notes.append("orientation undecided: every weight is square; say transpose in "
                       "the spec")
    h.orientation = orientation
    if orientation:
        out_axis = 0 if orientation == "out-by-in" else 1
        chain = [shapes[0][1 - out_axis]] + [s[out_axis] for s in shapes]
        h.chain = chain
        for (u, lh), s in zip(dense, shapes):
            n_out, n_in = s[out_axis], s[1 - out_axis]
            slots = {"kernel": [u.tensors["weight"].name]}
            args = {"units": n_out}
            if "bias" in u.tensors:
                slots["bias"] = [u.tensors["bias"].name]
            else:
                args["use_bias"] = False
            decide = ["activation"]
            if n_in == n_out and conv == "plain":
                decide.append(f"square {n_in}x{n_in} weight: stored {orientation} (from the "
                              f"chain); the spec must say transpose explicitly")
            lh.proposal = Proposal("Dense", args, slots,
                                   f"dense {n_in} -> {n_out} ({orientation})", n_in, n_out,
                                   decide=decide, kind="dense")
    for lh in h.layers:
        if lh.proposal is None:
            lh.notes.append("not recognised as a layer")


def _consistent(shapes, biases, out_axis: int) -> bool:
    for i, s in enumerate(shapes):
        if biases[i] is not None and biases[i] != s[out_axis]:
            return False
        if i and shapes[i - 1][out_axis] != s[1 - out_axis]:
            return False
    return True
