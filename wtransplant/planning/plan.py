"""The mapping plan: a ledger giving every Keras variable exactly one source.

Order of matching (each step only sees what earlier steps left):

1. ``weights`` entries of the spec (explicit);
2. ``rules`` (regex on source names -> target, ``\\1`` back-references);
3. by name: a source unit named like the Keras layer (Keras 2 files into the same
   architecture; Keras 3 files through the layer name each group records);
4. by order: remaining Keras layers, in model order, take the first remaining unit whose
   tensors fit the layer's roles and shapes, but only where that choice is unambiguous.

Every assignment carries its recipe (the ops that convert the source layout, see
:mod:`wtransplant.planning.layouts`), checked on shapes before anything is read. A Keras variable
left without a source, a source used twice, or a shape no rule explains is a
:class:`~wtransplant.errors.MappingError` naming the target, the source and both shapes.
Only h5py/numpy are needed; values are read later by :func:`materialize`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from wtransplant.errors import MappingError, UnsafeInputError
from wtransplant.planning.layouts import TargetLayer, TargetVar, Unit, layout_for
from wtransplant.planning.layouts.ops import (
    GateReorder,
    Op,
    OpShapeError,
    Reshape,
    ReverseAxes,
    Sum,
    Transpose,
    apply,
    run_shapes,
)
from wtransplant.planning.spec import Spec, WeightRef
from wtransplant.reading.formats import SourceTensor, keras3_group_names
from wtransplant.reading.loaded import LoadedSource
from wtransplant.reading.sources import Source, as_source


@dataclass
class Assignment:
    target: TargetVar
    layer: TargetLayer
    sources: list[SourceTensor]
    how: str  # explicit | rule | name | order
    ops: list[Op] = field(default_factory=list)
    cast: str | None = None  # "float64 -> float32"
    detail: str = ""  # e.g. which rule, which unit

    def to_dict(self) -> dict:
        return {
            "target": self.target.key,
            "target_shape": list(self.target.shape),
            "target_dtype": self.target.dtype,
            "sources": [{"name": s.name, "path": s.path, "shape": list(s.stored_shape),
                         "dtype": s.dtype} for s in self.sources],
            "how": self.how,
            "detail": self.detail,
            "ops": [op.describe() for op in self.ops],
            "cast": self.cast,
        }


@dataclass
class Plan:
    convention: str
    source_format: str
    assignments: list[Assignment]
    unused: list[str] = field(default_factory=list)  # source tensors no target took
    ignored: list[str] = field(default_factory=list)  # bookkeeping / options.ignore
    reference_data: list[str] = field(default_factory=list)  # verify inputs/expected
    missing_allowed: list[str] = field(default_factory=list)  # targets left as initialised
    casts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def by_layer(self) -> dict[str, list[Assignment]]:
        out: dict[str, list[Assignment]] = {}
        for a in self.assignments:
            out.setdefault(a.layer.name, []).append(a)
        return out

    def counts(self) -> dict:
        c: dict[str, int] = {}
        for a in self.assignments:
            c[a.how] = c.get(a.how, 0) + 1
        return c

    def to_dict(self) -> dict:
        return {
            "convention": self.convention,
            "source_format": self.source_format,
            "matched": self.counts(),
            "assignments": [a.to_dict() for a in self.assignments],
            "unused": self.unused,
            "ignored": self.ignored,
            "reference_data": self.reference_data,
            "missing_allowed": self.missing_allowed,
            "casts": self.casts,
            "warnings": self.warnings,
        }


def resolve_convention(spec_conv: str, loaded: LoadedSource) -> str:
    return loaded.detection.convention if spec_conv == "auto" else spec_conv


# --------------------------------------------------------------------------------------


@dataclass
class _Pick:
    """The sources chosen for one target, and how."""

    sources: list[SourceTensor]
    how: str  # explicit | rule | name | order
    detail: str = ""
    ref: WeightRef | None = None


@dataclass
class _Ledger:
    """What each target takes so far; a source feeds one target unless the spec's
    ``options.allow_reuse`` lists it."""

    allow_reuse: list[str]
    chosen: dict[str, _Pick] = field(default_factory=dict)  # target key -> pick
    used: dict[str, str] = field(default_factory=dict)  # source name -> target key

    def take(self, key: str, srcs: list[SourceTensor], how: str, detail: str = "",
             ref: WeightRef | None = None) -> None:
        for s in srcs:
            prev = self.used.get(s.name)
            if prev is not None and not any(fnmatch.fnmatchcase(s.name, g)
                                            for g in self.allow_reuse):
                raise MappingError(
                    f"source {s.name} {tuple(s.shape)} would feed both {prev} and {key}; a "
                    f"source is used at most once unless options.allow_reuse lists it")
        for s in srcs:
            self.used[s.name] = key
        self.chosen[key] = _Pick(srcs, how, detail, ref)


def make_plan(spec: Spec, loaded: LoadedSource, layers: list[TargetLayer], *,
              reference_names: tuple[str, ...] = ()) -> Plan:
    """Give every Keras variable of ``layers`` its source tensors and recipe (see the
    module's docstring for the order of matching); raises MappingError naming what does
    not fit."""
    conv = resolve_convention(spec.convention, loaded)
    targets: dict[str, tuple[TargetLayer, TargetVar]] = {
        v.key: (lay, v) for lay in layers for v in lay.vars}
    tensors = list(loaded.tensors)
    ref = {t.name for t in map(loaded.tensor, reference_names) if t is not None}
    ignored = [t.name for t in tensors
               if any(fnmatch.fnmatchcase(t.name, g) for g in spec.options.ignore)
               or t.role in _bookkeeping(conv) or t.role == "optimizer-state"]
    pool = [t for t in tensors if t.name not in ref and t.name not in ignored]
    led = _Ledger(spec.options.allow_reuse)

    _match_explicit(spec, loaded, layers, targets, conv, led)  # 1.
    if spec.rules:  # 2.
        _match_rules(spec, pool, layers, targets, conv, led)
    # 3. by name, 4. by order: whole units into whole layers
    units = [u for u in loaded.reader.units([t for t in pool if t.name not in led.used])
             if u.tensors]
    rejected: dict[str, tuple] = {}  # unit -> (why its tensors could not feed a layer, names)
    if spec.options.match_by_name:
        _match_by_name(layers, units, _unit_aliases(units, loaded), conv, led, rejected)
    if spec.options.match_by_order:
        _match_by_order(layers, units, led.chosen, led.used, conv, led.take, rejected)
    missing_allowed = _check_complete(spec, targets, pool, led, rejected)

    plan = Plan(conv, loaded.format, _assignments(layers, led, conv), ignored=ignored,
                reference_data=sorted(ref), missing_allowed=missing_allowed)
    plan.unused = [t.name for t in pool if t.name not in led.used]
    casts: dict[str, int] = {}
    for a in plan.assignments:
        if a.cast:
            casts[a.cast] = casts.get(a.cast, 0) + 1
    plan.casts = [f"{k} ({n} tensor{'s' if n > 1 else ''}; values rounded to the Keras "
                  f"variable dtype)" for k, n in casts.items()]
    for lay in layers:
        layout = layout_for(lay.class_name)
        if layout is not None:
            plan.warnings += layout.checks(lay, conv)
    return plan


def _match_explicit(spec: Spec, loaded: LoadedSource, layers, targets, conv: str,
                    led: _Ledger) -> None:
    """1. the spec's ``weights`` entries; each recipe is checked on shapes at once."""
    for key, wref in spec.weights.items():
        if key not in targets:
            raise MappingError(_no_target(key, layers, f"weights entry (line {wref.line})"
                                          if wref.line else "weights entry"))
        srcs = []
        for name in wref.sources:
            t = loaded.tensor(name)
            if t is None:
                link = loaded.tree.links.get("/" + name.lstrip("/"))
                if link is not None and link.kind == "external":
                    raise UnsafeInputError(
                        f"weights: {key} <- {name}: an external link to {link.target_file}:"
                        f"{link.target}; not followed (options.follow_links: true allows it)",
                        path=loaded.tree.display)
                raise MappingError(f"weights: {key} <- {name}: no tensor {name!r} in "
                                   f"{loaded.tree.display}{_close(name, list(loaded.tensors))}")
            srcs.append(t)
        layer, var = targets[key]
        build_recipe(var, layer, srcs, conv, wref)  # a shape no rule explains fails here
        led.take(key, srcs, "explicit", ref=wref)


def _match_rules(spec: Spec, pool, layers, targets, conv: str, led: _Ledger) -> None:
    """2. ``rules``: the first rule whose regex matches a source names its target."""
    pending: dict[str, list[tuple[SourceTensor, str]]] = {}
    for t in pool:
        if t.name in led.used:
            continue
        for i, rule in enumerate(spec.rules):
            m = rule.match.search(t.name)
            if not m:
                continue
            try:
                key = m.expand(rule.to)
            except (re.error, IndexError) as e:
                raise MappingError(f"rules[{i}] cannot expand {rule.to!r} for {t.name}: "
                                   f"{e}") from None
            if key not in targets:
                raise MappingError(_no_target(key, layers, f"rules[{i}] "
                                              f"({rule.match.pattern!r} on {t.name})"))
            if key not in led.chosen:
                pending.setdefault(key, []).append((t, f"rules[{i}]"))
            break
    for key, lst in pending.items():
        srcs = [t for t, _ in lst]
        layer, var = targets[key]
        srcs = _order_for_roles(srcs, layer, var, conv)
        led.take(key, srcs, "rule", lst[0][1])


def _match_by_name(layers, units, names: dict[str, Unit], conv: str, led: _Ledger,
                   rejected: dict) -> None:
    """3. a source unit named like the Keras layer (or the name a Keras 3 file records)."""
    for lay in layers:
        open_vars = [v for v in lay.vars if v.key not in led.chosen]
        if not open_vars:
            continue
        u = names.get(lay.name) or names.get(lay.name.lower())
        if u is None:
            continue
        fit = _fit_unit(u, lay, open_vars, conv, led.used, rejected)
        if fit is None and u.key in rejected:
            raise MappingError(f"layer {lay.name} and the source unit of the same name "
                               f"{u.key}: {rejected[u.key][0]}")
        if fit is not None:
            for key, srcs in fit.items():
                led.take(key, srcs, "name", f"unit {u.key}")


def _check_complete(spec: Spec, targets, pool, led: _Ledger, rejected: dict) -> list[str]:
    """Every target has a source, or ``options.allow_missing`` lists it (returned)."""
    missing_allowed = []
    for key, (_lay, var) in targets.items():
        if key in led.chosen:
            continue
        if any(fnmatch.fnmatchcase(key, g) for g in spec.options.allow_missing):
            missing_allowed.append(key)
            continue
        left = [t for t in pool if t.name not in led.used]
        left_names = {t.name for t in left}
        why = [f"{k}: {msg}" for k, (msg, names) in rejected.items() if names & left_names]
        if why:
            raise MappingError(f"{key} (Keras shape {tuple(var.shape)}) has no source; the "
                               f"candidate {why[0]}")
        hint = ", ".join(f"{t.name} {tuple(t.shape)}" for t in left[:6]) or "none"
        raise MappingError(
            f"{key} (Keras shape {tuple(var.shape)}) has no source: no weights entry, rule, "
            f"same-named unit or unambiguous unit in order fits it. Unused source tensors: "
            f"{hint}{' ...' if len(left) > 6 else ''}. Map it in the spec's weights, or list "
            f"it under options.allow_missing to keep Keras' initial values")
    return missing_allowed


def _assignments(layers, led: _Ledger, conv: str) -> list[Assignment]:
    """The chosen sources with their recipes and casts, in model order."""
    out = []
    for lay in layers:
        for var in lay.vars:
            pick = led.chosen.get(var.key)
            if pick is None:
                continue
            ops = build_recipe(var, lay, pick.sources, conv, pick.ref)
            a = Assignment(var, lay, pick.sources, pick.how, ops, detail=pick.detail)
            src_dt = {s.dtype for s in pick.sources}
            if src_dt != {var.dtype}:
                a.cast = f"{'+'.join(sorted(src_dt))} -> {var.dtype}"
            out.append(a)
    return out


def _bookkeeping(conv: str) -> tuple:
    out = ()
    from wtransplant.planning.layouts.layers import REGISTRY

    for lay in REGISTRY.values():
        out += lay.bookkeeping_roles(conv)
    return out


def _naming_the_file(make):
    """``make_plan``, whose NotSupported (a layer type with no recipe under the convention:
    layouts know shapes, not files) names the source file."""
    from functools import wraps

    from wtransplant.planning.layouts import NotSupported

    @wraps(make)
    def make_plan(spec, loaded, layers, **kw):
        try:
            return make(spec, loaded, layers, **kw)
        except NotSupported as e:
            raise NotSupported(str(e), path=loaded.tree.display) from None

    return make_plan


make_plan = _naming_the_file(make_plan)


def _no_target(key: str, layers: list[TargetLayer], where: str) -> str:
    lname = key.rsplit("/", 1)[0]
    lay = next((x for x in layers if x.name == lname), None)
    if lay is not None:
        return (f"{where}: target {key!r} is not a variable of layer {lname} "
                f"({lay.class_name}); its variables are "
                f"{', '.join(v.key for v in lay.vars)}")
    names = ", ".join(x.name for x in layers[:12])
    return (f"{where}: target {key!r}: the model has no layer {lname!r} with weights "
            f"(layers with weights: {names}{' ...' if len(layers) > 12 else ''})")


def _close(name: str, tensors: list[SourceTensor]) -> str:
    import difflib

    near = difflib.get_close_matches(name, [t.name for t in tensors], n=3)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _unit_aliases(units: list[Unit], loaded: LoadedSource) -> dict[str, Unit]:
    """Names a unit answers to: its key, the key without a torch RNN layer suffix, and for
    Keras 3 files the user's layer name recorded on the group."""
    user = keras3_group_names(loaded.tree)
    out: dict[str, Unit] = {}
    for u in units:
        keys = {u.key, u.key.split("#", 1)[0]}
        for g, name in user.items():
            if g.rstrip("/").removesuffix("/vars") == u.key:
                keys.add(name)
        for k in keys:
            out.setdefault(k, u)
            out.setdefault(k.lower(), u)
    return out


def _roles_for(layer: TargetLayer, var: TargetVar, conv: str) -> tuple[str, ...]:
    layout = layout_for(layer.class_name)
    if layout is None:
        return (var.var,)
    return layout.source_roles(var.var, conv, layer)


def _order_for_roles(srcs, layer, var, conv):
    roles = _roles_for(layer, var, conv)
    if len(srcs) < 2:
        return srcs

    def key(t):
        for i, item in enumerate(roles):
            if t.role.lower() in (a.lower() for a in item.split("|")):
                return i
        return len(roles)

    return sorted(srcs, key=key)


def _fit_unit(u: Unit, lay: TargetLayer, open_vars: list[TargetVar], conv: str,
              used: dict, rejected: dict | None = None
              ) -> dict[str, list[SourceTensor]] | None:
    """Sources for each open variable of ``lay`` from unit ``u`` if every variable finds its
    roles there and the recipe fits the shapes; None otherwise."""
    out = {}
    roles_all = list(u.tensors)
    if roles_all and all(r.isdigit() for r in roles_all):
        # Keras 3 file: vars/<i> in the layer's own variable order
        idx = sorted(roles_all, key=int)
        if len(idx) != len(lay.vars):
            return None
        for v, r in zip(lay.vars, idx):
            if v in open_vars:
                out[v.key] = [u.tensors[r]]
    else:
        lower = {r.lower(): t for r, t in u.tensors.items()}
        for v in open_vars:
            srcs = []
            for item in _roles_for(lay, v, conv):
                t = next((lower[a.lower()] for a in item.split("|") if a.lower() in lower),
                         None)
                if t is None:
                    return None
                srcs.append(t)
            out[v.key] = srcs
    for key, srcs in out.items():
        if any(s.name in used for s in srcs):
            return None
        v = next(x for x in lay.vars if x.key == key)
        try:
            build_recipe(v, lay, srcs, conv, None)
        except MappingError as e:
            # the roles fit but the layout does not: remember why, for the error message
            if rejected is not None and _same_kind(u, lay):
                rejected[u.key] = (str(e), set(u.names()))
            return None
    return out


def _same_kind(u: Unit, lay: TargetLayer) -> bool:
    """Would this unit be this layer if only the layout fitted? (same shapes, up to order)"""
    import math

    want = sorted(math.prod(v.shape) for v in lay.vars)
    have = sorted(math.prod(t.shape) for t in u.tensors.values())
    return want == have or (len(have) > len(want) and all(w in have for w in want))


def _block(key: str) -> str:
    return re.sub(r"\d+", "#", key)


def _match_by_order(layers, units, chosen, used, conv, take, rejected) -> None:
    for lay in layers:
        open_vars = [v for v in lay.vars if v.key not in chosen]
        if not open_vars:
            continue
        cands = []
        for u in units:
            if any(t.name in used for t in u.tensors.values()):
                continue
            fit = _fit_unit(u, lay, open_vars, conv, used, rejected)
            if fit is not None:
                cands.append((u, fit))
        if not cands:
            continue
        if len({_block(u.key) for u, _ in cands}) > 1:
            names = ", ".join(u.key for u, _ in cands[:5])
            raise MappingError(
                f"layer {lay.name} ({lay.class_name}) could take any of {names}: same shapes "
                f"in different parts of the file, and HDF5 does not keep their order. Map "
                f"this layer in the spec's weights (or add a rule)")
        u, fit = cands[0]
        for key, srcs in fit.items():
            take(key, srcs, "order", f"unit {u.key}" + (
                f" (first of {len(cands)} that fit)" if len(cands) > 1 else ""))


# --------------------------------------------------------------------------------------
# recipes

def build_recipe(var: TargetVar, layer: TargetLayer, srcs: list[SourceTensor], conv: str,
                 wref: WeightRef | None) -> list[Op]:
    """The ops taking the stored source arrays to the Keras variable; checked on shapes."""
    from wtransplant.planning.layouts import conventions

    ops: list[Op] = []
    shapes = [tuple(s.stored_shape) for s in srcs]
    if any(s.column_major for s in srcs):
        if not all(s.column_major for s in srcs):
            raise MappingError(f"{var.key}: sources mix column-major and row-major files")
        ops.append(ReverseAxes())
        shapes = [tuple(reversed(s)) for s in shapes]
    if wref is not None and wref.explicit:
        if len(srcs) != 1:
            raise MappingError(f"{var.key}: transpose/reshape/convert need exactly one "
                               f"source, got {len(srcs)}")
        if wref.transpose is not None:
            ops.append(Transpose(tuple(wref.transpose), why="from the spec"))
        if wref.reshape is not None:
            ops.append(Reshape(tuple(wref.reshape), why="from the spec"))
    else:
        order = conventions.fact(conv, "flatten_order")
        note = layer.flatten_note or ""
        if wref is not None and wref.flatten != "auto":
            order = None if wref.flatten == "none" else wref.flatten
        elif note.startswith("undecidable") and order and var.var == "kernel":
            raise MappingError(
                f"{var.key}: the flatten order of this layer's input cannot be derived from "
                f"the graph ({note.split(': ', 1)[1]}); say `flatten: chw`, `fortran` or "
                f"`none` in its weights entry")
        elif note.startswith("mirrored"):
            order = None  # the graph reorders the map as the source did
        lay = replace(layer, flatten_order=order)
        layout = layout_for(layer.class_name)
        if layout is None:
            if not conventions.fact(conv, "copies_unknown_layers"):
                raise MappingError(
                    f"{var.key}: wtransplant has no layout rule for {layer.class_name} under "
                    f"the {conv} convention; give 'transpose'/'reshape' explicitly in the "
                    f"spec's weights entry")
            more = []
        else:
            try:
                more = layout.recipe(var.var, conv, shapes, lay, var)
            except MappingError as e:
                # layouts know shapes, not names: say which source tensors were meant
                why = str(e).removeprefix(f"{var.key}: ")
                src = " + ".join(s.name for s in srcs)
                raise type(e)(f"{var.key} <- {src}: {why}") from None  # NotSupported stays
        ops += more
    if wref is not None and wref.gates:
        ops = _with_gates(ops, wref.gates, var, layer, conv)
    try:
        out = run_shapes(ops, [tuple(s.stored_shape) for s in srcs])
    except OpShapeError as e:
        raise MappingError(_shape_msg(var, srcs, str(e))) from None
    if len(out) != 1 or tuple(out[0]) != tuple(var.shape):
        got = " + ".join(str(tuple(o)) for o in out)
        raise MappingError(_shape_msg(var, srcs, f"the conversion gives {got}"))
    return ops


def _with_gates(ops: list[Op], gates: str, var: TargetVar, layer: TargetLayer,
                conv: str) -> list[Op]:
    """The recipe with a reorder of the RNN gate blocks from the spec's `gates` (the source's
    order) to the order the convention's conversion expects (its ``gates`` fact). PyTorch
    stacks the gates on the first axis of every tensor (``gates_on_source_axis``: reordered
    first); the other conventions hold Keras' layout after their conversion, gates on the
    last axis (reordered last)."""
    from wtransplant.planning.layouts import conventions
    from wtransplant.planning.spec import gate_letters

    cls = layer.inner_class if layer.class_name == "Bidirectional" else layer.class_name
    given = gate_letters(gates)
    want = conventions.fact(conv, "gates").get(cls)
    if want is None or given is None or len(given) != len(want):
        raise MappingError(f"{var.key}: gates {gates!r} do not apply to a {cls} layer "
                           f"(GRU: z, r, h/n; LSTM: i, f, c/g, o)")
    order = tuple(given.index(ch) for ch in want)
    if order == tuple(range(len(want))):
        return ops
    if conventions.fact(conv, "gates_on_source_axis"):
        lead = 1 if ops and isinstance(ops[0], ReverseAxes) else 0
        return ops[:lead] + [GateReorder(0, order, gates, want)] + ops[lead:]
    n = len(var.shape) - 1
    return ops + [GateReorder(n, order, gates, f"{want} (Keras)")]


def _shape_msg(var, srcs, why) -> str:
    src = " + ".join(f"{s.name} {tuple(s.shape)}" for s in srcs)
    return (f"{var.key}: source {src} does not fit Keras shape {tuple(var.shape)}: {why}")


# --------------------------------------------------------------------------------------
# reading values


@dataclass
class Value:
    assignment: Assignment
    array: np.ndarray
    source_sha256: list[str]
    value_sha256: str


def materialize(plan: Plan, src: Source, assignments: list[Assignment] | None = None,
                *, checksums: bool = True) -> Iterator[Value]:
    """Read, convert and cast each assignment's sources, one assignment at a time.

    One copy of each tensor is in flight where the recipe allows it: a source whose dtype
    differs from the target's is cast block by block while it is read (when the recipe
    only moves values: no sum, whose rounding depends on the dtype it runs in), the
    NaN/Inf scan runs in blocks, and the generator keeps no reference to a value it has
    handed over (the caller drops it once assigned)."""
    src = as_source(src)
    for a in assignments if assignments is not None else plan.assignments:
        want = np.dtype(a.target.dtype)
        cast_early = not any(isinstance(op, Sum) for op in a.ops)
        raw, sums, src_dtypes = [], [], []
        for s in a.sources:
            h = None
            if cast_early:
                ds_dtype, ds_shape = src.stored_type(s.path)
                if ds_dtype is not None and ds_dtype != want and ds_dtype.kind in "fiu" \
                        and want.kind in "fiu":
                    h = array_hasher(ds_dtype, ds_shape) if checksums else None
                    raw.append(src.read_as(s.path, want, hasher=h))
                    src_dtypes.append(ds_dtype)
                    sums.append(h.hexdigest() if h is not None else None)
                    continue
            r = src.read(s.path)
            raw.append(r)
            src_dtypes.append(r.dtype)
            sums.append(sha256_array(r) if checksums else None)
        sums = sums if checksums else []
        try:
            arr = apply(a.ops, raw)
        except (OpShapeError, ValueError) as e:
            raise MappingError(_shape_msg(a.target, a.sources, str(e))) from None
        identity = not a.ops and len(raw) == 1 and src_dtypes[0] == want
        del raw
        arr = arr.astype(want, copy=False)
        if arr.dtype.kind == "f":
            bad = count_nonfinite(arr)
            if bad:
                plan.warnings.append(f"{a.target.key}: {bad} NaN/Inf values in the source")
        # the converted value is the source itself when nothing was done to it
        value_sum = (sums[0] if identity else sha256_array(arr)) if checksums else ""
        value = Value(a, arr, sums, value_sum)
        del arr
        yield value
        del value


def array_hasher(dtype: np.dtype, shape: tuple):
    """A sha256 primed as :func:`sha256_array` primes it (dtype, shape), for values fed
    block by block."""
    h = hashlib.sha256()
    h.update(str(dtype).encode())
    h.update(str(tuple(shape)).encode())
    return h


#: elements per block of the NaN/Inf scan (a 4 MiB boolean temporary at most)
SCAN_BLOCK = 1 << 22


def count_nonfinite(arr: np.ndarray) -> int:
    """NaN/Inf values in a float array, scanned in blocks (no array-sized temporary)."""
    flat = arr.reshape(-1)
    bad = 0
    for i in range(0, flat.size, SCAN_BLOCK):
        fin = np.isfinite(flat[i:i + SCAN_BLOCK])
        if not fin.all():
            bad += int(fin.size - np.count_nonzero(fin))
    return bad


#: elements per block of :func:`same_bytes` (a 1 MiB boolean temporary at most)
COMPARE_BLOCK = 1 << 20


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` have the same dtype, shape and bytes (C order): exactly when
    :func:`sha256_array` gives them the same digest, at about 7x its speed. Compared as
    unsigned integers, so NaNs of the same bits are equal, and a block at a time."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    x = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    y = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    n8 = x.size // 8 * 8
    x8, y8 = x[:n8].view(np.uint64), y[:n8].view(np.uint64)
    for i in range(0, x8.size, COMPARE_BLOCK):
        if not np.array_equal(x8[i:i + COMPARE_BLOCK], y8[i:i + COMPARE_BLOCK]):
            return False
    return bool(np.array_equal(x[n8:], y[n8:]))


def sha256_array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()
