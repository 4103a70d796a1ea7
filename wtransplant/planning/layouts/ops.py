"""Layout operations as data: each op knows what it does to shapes, to arrays, and how to
say it in one line. A conversion is a *recipe*: a list of ops taking the list of source
arrays (one or several) to exactly one array in the Keras layout.

Planning runs recipes on shapes only (no values are read), so every shape problem is found
before anything is loaded; the ledger prints ``describe()`` of every op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wtransplant._lazy import lazy

np = lazy("numpy")


Shape = tuple[int, ...]


class Op:
    """Base: takes a list of arrays/shapes, returns a list."""

    def shapes(self, shapes: list[Shape]) -> list[Shape]:
        raise NotImplementedError

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        d = {"op": type(self).__name__.lower()}
        d.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()
                  if not k.startswith("_")})
        d["says"] = self.describe()
        return d


class OpShapeError(ValueError):
    """A recipe does not fit the shapes it was given."""


def _one(shapes, op):
    if len(shapes) != 1:
        raise OpShapeError(f"{op.describe()} needs one tensor, got {len(shapes)}")
    return shapes[0]


@dataclass
class Transpose(Op):
    axes: tuple
    why: str = ""

    def shapes(self, shapes):
        s = _one(shapes, self)
        if len(s) != len(self.axes):
            raise OpShapeError(f"transpose{self.axes} needs rank {len(self.axes)}, got {s}")
        return [tuple(s[a] for a in self.axes)]

    def apply(self, arrays):
        return [np.transpose(arrays[0], self.axes)]

    def describe(self):
        txt = "transpose(" + ",".join(map(str, self.axes)) + ")"
        return f"{txt} [{self.why}]" if self.why else txt


@dataclass
class ReverseAxes(Op):
    """MATLAB/Octave write column-major: h5py shows the axes reversed. Applied per source."""

    def shapes(self, shapes):
        return [tuple(reversed(s)) for s in shapes]

    def apply(self, arrays):
        return [np.transpose(a) for a in arrays]

    def describe(self):
        return "reverse axes (column-major file: stored shape -> MATLAB's own shape)"


@dataclass
class Reshape(Op):
    shape: tuple
    why: str = ""

    def shapes(self, shapes):
        s = _one(shapes, self)
        n = math.prod(s)
        target = list(self.shape)
        if target.count(-1) > 1:
            raise OpShapeError(f"reshape{tuple(self.shape)}: more than one -1")
        if -1 in target:
            known = math.prod(x for x in target if x != -1)
            if known == 0 or n % known:
                raise OpShapeError(f"cannot reshape {s} to {tuple(self.shape)}")
            target[target.index(-1)] = n // known
        if math.prod(target) != n:
            raise OpShapeError(f"cannot reshape {s} ({n} values) to {tuple(self.shape)}")
        return [tuple(target)]

    def apply(self, arrays):
        return [np.reshape(arrays[0], self.shape)]

    def describe(self):
        txt = "reshape(" + ",".join(map(str, self.shape)) + ")"
        return f"{txt} [{self.why}]" if self.why else txt


@dataclass
class GateReorder(Op):
    """Reorder equal blocks along an axis: RNN gate stacks (torch GRU r,z,n -> Keras z,r,h)."""

    axis: int
    order: tuple  # new block i comes from old block order[i]
    source_gates: str = ""
    target_gates: str = ""

    def shapes(self, shapes):
        out = []
        for s in shapes:
            if s[self.axis] % len(self.order):
                raise OpShapeError(f"axis {self.axis} of {s} does not split into "
                                   f"{len(self.order)} gates")
            out.append(s)
        return out

    def apply(self, arrays):
        out = []
        for a in arrays:
            blocks = np.split(a, len(self.order), axis=self.axis)
            out.append(np.concatenate([blocks[i] for i in self.order], axis=self.axis))
        return out

    def describe(self):
        if self.source_gates:
            return (f"gate reorder {self.source_gates} -> {self.target_gates} "
                    f"(blocks {list(self.order)} along axis {self.axis})")
        return f"reorder blocks {list(self.order)} along axis {self.axis}"


@dataclass
class Sum(Op):
    why: str = ""

    def shapes(self, shapes):
        if len(shapes) < 2 or len(set(shapes)) != 1:
            raise OpShapeError(f"sum needs two or more tensors of one shape, got {shapes}")
        return [shapes[0]]

    def apply(self, arrays):
        out = arrays[0].astype(np.result_type(*arrays), copy=True)
        for a in arrays[1:]:
            out += a
        return [out]

    def describe(self):
        return f"sum [{self.why}]" if self.why else "sum"


@dataclass
class Stack(Op):
    why: str = ""

    def shapes(self, shapes):
        if len(shapes) < 2 or len(set(shapes)) != 1:
            raise OpShapeError(f"stack needs two or more tensors of one shape, got {shapes}")
        return [(len(shapes), *shapes[0])]

    def apply(self, arrays):
        return [np.stack(arrays)]

    def describe(self):
        return f"stack [{self.why}]" if self.why else "stack"


@dataclass
class BroadcastTo(Op):
    """Repeat a tensor (with size-1 axes) to a shape: a shared PReLU slope filling every
    position it covers."""

    shape: tuple
    why: str = ""

    def shapes(self, shapes):
        s = _one(shapes, self)
        if len(s) != len(self.shape) or any(a not in (1, b) for a, b in zip(s, self.shape)):
            raise OpShapeError(f"cannot broadcast {s} to {tuple(self.shape)}")
        return [tuple(self.shape)]

    def apply(self, arrays):
        return [np.broadcast_to(arrays[0], self.shape).copy()]

    def describe(self):
        txt = "repeat to (" + ",".join(map(str, self.shape)) + ")"
        return f"{txt} [{self.why}]" if self.why else txt


def run_shapes(recipe: list[Op], shapes: list[Shape]) -> list[Shape]:
    for op in recipe:
        shapes = op.shapes(shapes)
    return shapes


def apply(recipe: list[Op], arrays: list[np.ndarray]) -> np.ndarray:
    """Run a recipe on arrays, fusing consecutive transposes so each tensor is copied once."""
    for op in fuse(recipe):
        arrays = op.apply(arrays)
    if len(arrays) != 1:
        raise OpShapeError(f"recipe left {len(arrays)} tensors, expected 1")
    return np.ascontiguousarray(arrays[0])


def fuse(recipe: list[Op]) -> list[Op]:
    """Compose runs of single-tensor transposes into one (identity runs vanish)."""
    out: list[Op] = []
    for op in recipe:
        if isinstance(op, ReverseAxes | Transpose) and out and isinstance(out[-1], _Perm):
            out[-1] = out[-1].then(op)
        elif isinstance(op, Transpose | ReverseAxes):
            out.append(_Perm(None).then(op))
        else:
            out.append(op)
    return [o for o in out if not (isinstance(o, _Perm) and o.is_identity)]


class _Perm(Op):
    """A composed axis permutation (internal: built by :func:`fuse`)."""

    def __init__(self, axes):
        self.axes = axes  # None: identity of unknown rank
        self.reverse_each = False

    def then(self, op):
        p = _Perm(self.axes)
        p.reverse_each = self.reverse_each
        if isinstance(op, ReverseAxes):
            if p.axes is None:
                p.reverse_each = True
            else:
                p.axes = tuple(reversed(p.axes))
        else:
            new = op.axes
            if p.axes is None and not p.reverse_each:
                p.axes = tuple(new)
            elif p.axes is None:  # reverse then transpose: compose on the fly at apply
                n = len(new)
                p.axes = tuple((n - 1 - a) for a in new)
                p.reverse_each = False
            else:
                p.axes = tuple(p.axes[a] for a in new)
        return p

    @property
    def is_identity(self):
        return (not self.reverse_each and self.axes is not None
                and tuple(self.axes) == tuple(range(len(self.axes))))

    def apply(self, arrays):
        if self.reverse_each:
            return [np.transpose(a) for a in arrays]
        return [np.transpose(a, self.axes) for a in arrays]

    def shapes(self, shapes):
        if self.reverse_each:
            return [tuple(reversed(s)) for s in shapes]
        return [tuple(s[a] for a in self.axes) for s in shapes]

    def describe(self):
        return f"permute axes {self.axes}" if not self.reverse_each else "reverse axes"
