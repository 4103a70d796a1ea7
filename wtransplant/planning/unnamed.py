"""Drafts for files whose tensor names say nothing: ``arr_0``, ``arr_1``, ... as
``numpy.savez`` writes a list, or a ``get_weights()`` / ``state_dict().values()`` dump.

The layer stack is read from the list by order, then by shape: weight tensors (2-D dense,
3-D/4-D conv) are chained from the input's size (the first in file order that takes the
current size), which also tells the convention (PyTorch's (out, in, k...) or Keras'
(k..., in, out)); 1-D tensors of a layer's output size are its bias and, when there are
four more per layer, a BatchNormalization after it. Everything the shapes cannot tell is
written undecided for :mod:`wtransplant.planning.settle`: activations, conv padding/strides, the
orientation of a square matrix, and which of several tensors of equal shape feeds which
variable (the file order first).

Layer 1: no Keras.
"""

from __future__ import annotations

import re

from wtransplant.reading.formats import SourceTensor

UNNAMED = re.compile(r"(?i)^(arr|array|param|params|tensor|weights?|w|var|v|layer)?[_.\-]?"
                     r"(\d+)$")

HIDDEN = ["relu", "tanh", "sigmoid", "linear"]
OUTPUT = ["linear", "softmax", "sigmoid"]
WHY_ACT = "the weights do not record activations"
BN_ROLES = ["gamma", "beta", "moving_mean", "moving_variance"]


def is_unnamed(tensors: list[SourceTensor]) -> bool:
    names = [t.name.strip("/") for t in tensors]
    return bool(names) and all(UNNAMED.match(n) for n in names)


def _und(c, why=None):
    d = {"undecided": list(c)}
    if why:
        d["why"] = why
    return d


def draft_unnamed(tensors: list[SourceTensor], x_shape: tuple | None, *,
                  owner: dict | None = None) -> tuple[dict, str, list[str]]:
    """(spec document with undecided values, convention, notes). ``x_shape``: one input
    sample in Keras layout (channels last), if known. ``owner``: tensor name -> layer
    number where names tell it (numbered files): vectors go to their own layer."""
    ts = sorted(tensors, key=lambda t: t.index)
    ts = [t for t in ts if len(t.shape) > 0 and not (len(t.shape) == 1 and t.shape[0] == 1
                                                      and t.dtype.startswith("int"))]
    weights = [t for t in ts if len(t.shape) >= 2]
    vectors = [t for t in ts if t not in weights]
    notes = []
    if not weights:
        raise ValueError("no 2-D or 4-D tensor: no dense or conv layer to draft")
    chain, conv = _chain(weights, x_shape)
    conv = conv or "torch"
    notes.append(f"the unnamed tensors read as a {conv} "
                 f"{'state_dict' if conv == 'torch' else 'get_weights()'} list: "
                 + " -> ".join(str(c[2]) for c in chain[:1]) + " -> "
                 + " -> ".join(str(c[3]) for c in chain))
    by_size, rnn_bias, extras, unused = _split_vectors(chain, vectors)
    layers, weights_doc, groups = _layers_doc(chain, conv, extras, rnn_bias)
    _equal_shape_sources(chain, groups, by_size, owner, weights_doc)
    order = {"kernel": 0, "recurrent_kernel": 1, "bias": 1, "gamma": 2, "beta": 3, "moving_mean": 4,
             "moving_variance": 5}
    pos = {d["name"]: i for i, d in enumerate(layers)}
    weights_doc = dict(sorted(weights_doc.items(), key=lambda kv: (
        pos.get(kv[0].split("/")[0], 0), order.get(kv[0].split("/")[-1], 9))))
    if unused:
        notes.append(f"tensors no layer takes: {', '.join(unused[:8])}")
    in_shape = list(x_shape) if x_shape else (
        [chain[0][2]] if chain[0][1] == "dense" else
        [None, chain[0][2]] if chain[0][1] in RNN_GATES else  # any sequence length
        [32] * len(chain[0][4]) + [chain[0][2]])
    doc = {"version": 1, "source": "", "convention": conv,
           "model": {"input_shape": in_shape, "layers": layers}, "weights": weights_doc}
    return doc, conv, notes


def _chain(weights: list[SourceTensor], x_shape) -> tuple[list, str | None]:
    """The weight tensors as a chain of layers, each taking the previous one's outputs:
    [(tensor, kind, n_in, n_out, kernel size or recurrent tensor)], and the convention
    their layouts tell (None: either)."""
    cur = int(x_shape[-1]) if x_shape else None
    conv = None
    chain = []  # (tensor, kind, n_in, n_out, k)
    left = list(weights)
    kind_prev = None
    while left:
        rnn = _rnn_pick(left, cur, x_shape, chain)
        if rnn is not None:
            t, th, kind, h = rnn
            left.remove(t)
            left.remove(th)
            chain.append((t, kind, int(t.shape[1]), h, th))
            conv = conv or "torch"
            cur = h
            kind_prev = kind
            continue
        pick = None
        for t in left:
            fit = _fits(t, cur, conv, kind_prev)
            if fit is not None:
                pick = (t, *fit)
                break
        if pick is None:
            if cur is None:
                t = left[0]
                pick = (t, *_guess_first(t))
            else:
                shown = ", ".join(f"{t.name} {tuple(t.shape)}" for t in left[:4])
                raise ValueError(f"no remaining weight tensor takes {cur} inputs: {shown}")
        t, kind, c, n_in, n_out, k = pick
        conv = conv or c
        left.remove(t)
        chain.append((t, kind, n_in, n_out, k))
        cur = n_out
        kind_prev = kind
    return chain, conv


def _split_vectors(chain, vectors: list[SourceTensor]):
    """The 1-D tensors, per output size in file order, shared out among the layers of that
    width: (by size, RNN layer -> its two biases, layer -> how many vectors it takes,
    names no layer takes)."""
    by_size: dict[int, list[SourceTensor]] = {}
    for v in vectors:
        by_size.setdefault(int(v.shape[0]), []).append(v)
    per_size_layers: dict[int, list[int]] = {}
    rnn_bias: dict[int, list[str]] = {}  # layer -> its two bias vectors (file order)
    for i, (t, kind, _i, n_out, _k) in enumerate(chain):
        if kind in RNN_GATES:
            mine = by_size.get(int(t.shape[0]), [])
            if len(mine) >= 2:
                rnn_bias[i] = [v.name for v in mine[:2]]
                by_size[int(t.shape[0])] = mine[2:]
            continue
        per_size_layers.setdefault(n_out, []).append(i)
    extras: dict[int, int] = {}  # layer -> number of vectors it takes (1 bias, 4 bn, 5 both)
    for size, idx in per_size_layers.items():
        n = len(by_size.get(size, []))
        if n % len(idx):
            raise ValueError(f"{n} vectors of size {size} for {len(idx)} layers of that "
                             f"width: cannot split them evenly")
        each = n // len(idx)
        if each not in (0, 1, 4, 5):
            raise ValueError(f"{each} vectors of size {size} per layer: expected 1 (bias), 4 "
                             f"(BatchNorm) or 5 (bias and BatchNorm)")
        for i in idx:
            extras[i] = each
    used_vec = {t.name for s in per_size_layers for t in by_size.get(s, [])} | {
        n for b in rnn_bias.values() for n in b}
    unused = [v.name for v in vectors if v.name not in used_vec]
    return by_size, rnn_bias, extras, unused


def _layers_doc(chain, conv: str, extras: dict, rnn_bias: dict):
    """The spec's layers and weights for the chain, with the guesses undecided; the bias and
    BatchNorm targets to fill from equal-shape vectors, by size."""
    layers: list[dict] = []
    weights_doc: dict = {}
    groups: dict[int, list[tuple[str, int]]] = {}  # size -> [(target, n)]
    n_conv = n_fc = 0
    for i, (t, kind, _n_in, n_out, k) in enumerate(chain):
        last = i == len(chain) - 1
        each = extras.get(i, 0)
        bn = each >= 4
        has_bias = each in (1, 5)
        if kind in RNN_GATES:
            name = kind
            d = {"class": kind.upper(), "name": name, "units": n_out}
            if i + 1 < len(chain) and chain[i + 1][1] in RNN_GATES:
                d["return_sequences"] = True
            if i not in rnn_bias:
                d["use_bias"] = False
            layers.append(d)
            why = ("the file does not record the gate order (PyTorch " +
                   ("r,z,n; Keras z,r,h)" if kind == "gru" else "i,f,g,o = Keras i,f,c,o; "
                                                                "ONNX i,o,f,c)"))
            srcs = {"kernel": t.name, "recurrent_kernel": k.name}
            if i in rnn_bias:
                srcs["bias"] = rnn_bias[i]
            for var, src in srcs.items():
                weights_doc[f"{name}/{var}"] = _und(
                    [{"from": list(src) if isinstance(src, list) else src, "gates": g}
                     for g in RNN_GATES[kind]], why)  # a list each: no YAML anchors
            continue
        if kind == "conv":
            n_conv += 1
            name = f"conv{n_conv}"
            d = {"class": f"Conv{len(k)}D", "name": name, "filters": n_out,
                 "kernel_size": list(k) if len(set(k)) > 1 else k[0],
                 "padding": _und(["same", "valid"] + (
                     [k[0] // 2] if len(set(k)) == 1 and k[0] % 2 and k[0] > 1 else []),
                     "the weights do not fix it (an integer: PyTorch's padding on both "
                     "sides, not Keras' same at stride 2)"),
                 "strides": _und([1, 2], "the weights do not fix it")}
        else:
            if kind_of(chain, i - 1) == "conv":
                layers.append({"class": "Flatten", "name": "flatten"})
            n_fc += 1
            name = f"fc{n_fc}"
            d = {"class": "Dense", "name": name, "units": n_out}
        if not has_bias:
            d["use_bias"] = False
        if bn:
            d["activation"] = "linear"
        else:
            d["activation"] = _und(OUTPUT if last else HIDDEN, WHY_ACT)
        layers.append(d)
        if kind == "dense" and t.shape[0] == t.shape[1]:
            first = [1, 0] if conv == "torch" else [0, 1]
            weights_doc[f"{name}/kernel"] = _und(
                [{"from": t.name, "transpose": first},
                 {"from": t.name, "transpose": [1 - first[0], 1 - first[1]]}],
                "a square matrix: its shape does not tell its orientation")
        else:
            weights_doc[f"{name}/kernel"] = t.name
        slots = (["bias"] if has_bias else []) + (BN_ROLES if bn else [])
        bn_name = f"bn{n_conv if kind == 'conv' else n_fc}" + ("" if kind == "conv" else "_fc")
        for s in slots:
            target = f"{name}/bias" if s == "bias" else f"{bn_name}/{s}"
            groups.setdefault(n_out, []).append(target)
        if bn:
            layers.append({"class": "BatchNormalization", "name": bn_name,
                           "epsilon": _und([1e-5, 1e-3], "the weights do not record the "
                                                         "source's epsilon")})
            act = {"class": "Activation", "name": f"act_{name}",
                   "activation": _und(OUTPUT if last else HIDDEN, WHY_ACT)}
            layers.append(act)
    return layers, weights_doc, groups


def _equal_shape_sources(chain, groups: dict, by_size: dict, owner: dict | None,
                         weights_doc: dict) -> None:
    """Vectors of equal shape into their targets: by the layer number their names tell
    (``owner``), else file order first with every rotation a candidate."""
    layer_num = {}
    n_c = n_f = 0
    for t, kind, *_r in chain:
        if kind == "conv":
            n_c += 1
            layer_num[f"conv{n_c}"] = (owner or {}).get(t.name)
        else:
            n_f += 1
            layer_num[f"fc{n_f}"] = (owner or {}).get(t.name)
    for size, targets in groups.items():
        pool = [v.name for v in by_size.get(size, [])]
        if owner:  # the names say which layer each vector belongs to
            for target in targets:
                num = layer_num.get(target.split("/")[0])
                mine = [n for n in pool if owner.get(n) == num]
                weights_doc[target] = mine[0] if len(mine) == 1 else _und(
                    mine or pool, "tensors of equal shape whose names say nothing")
            continue
        for j, target in enumerate(targets):
            if len(pool) == 1:
                weights_doc[target] = pool[0]
            else:
                rest = pool[j:] + pool[:j]
                weights_doc[target] = _und(rest, "tensors of equal shape whose names say "
                                                 "nothing")


#: RNN gate orders tried for a PyTorch-layout (gates*H, in) stack, the source's own first
RNN_GATES = {"gru": ["rzn", "zrh"], "lstm": ["ifgo", "iofc", "icfo"]}


def _rnn_pick(left, cur, x_shape, chain):
    """(W_ih, W_hh, kind, hidden) when the first layer of a sequence model reads as a
    PyTorch GRU/LSTM: W_ih (g*H, in) then W_hh (g*H, H), g = 3 (GRU) or 4 (LSTM)."""
    if chain or len(left) < 2 or (x_shape is not None and len(x_shape) != 2):
        return None  # with data: sequences only; without: the pair's shapes alone
    t, th = left[0], left[1]
    s, sh = tuple(int(d) for d in t.shape), tuple(int(d) for d in th.shape)
    if len(s) != 2 or len(sh) != 2 or s[1] != (cur if cur is not None else s[1]) or \
            sh[0] != s[0]:
        return None
    h = sh[1]
    kind = {3: "gru", 4: "lstm"}.get(s[0] // h if h and s[0] % h == 0 else 0)
    return (t, th, kind, h) if kind else None


def kind_of(chain, i):
    return chain[i][1] if i >= 0 else None


def _fits(t, cur, conv, kind_prev):
    """(kind, convention, n_in, n_out, kernel) if ``t`` can take ``cur`` inputs."""
    s = tuple(int(d) for d in t.shape)
    if cur is None:
        return None
    if len(s) in (3, 4, 5):
        nd = len(s) - 2
        if conv in (None, "torch") and s[1] == cur:
            return "conv", "torch", cur, s[0], s[2:]
        if conv in (None, "keras") and s[-2] == cur:
            return "conv", "keras", cur, s[-1], s[:nd]
        return None
    if len(s) == 2:
        after_conv = kind_prev == "conv"
        for c, (n_out, n_in) in (("torch", s), ("keras", s[::-1])):
            if conv not in (None, c):
                continue
            if n_in == cur or (after_conv and n_in % cur == 0 and n_in > cur):
                return "dense", c, n_in, n_out, ()
    return None


def _guess_first(t):
    s = tuple(int(d) for d in t.shape)
    if len(s) >= 3:
        return "conv", "torch", s[1], s[0], s[2:]
    return "dense", "torch", s[1], s[0], ()
