"""The registry's vocabulary: target layers/variables, source units, proposals, entries.

A :class:`LayerLayout` is everything wtransplant knows about one Keras layer type:
which source roles feed each of its variables under each convention, the recipe that
converts them (a list of :mod:`~wtransplant.planning.layouts.ops`), checks of the layer's settings
against the convention (a BatchNorm epsilon left at Keras' default under ``torch``...), and
a recognizer that guesses the layer from a group of source tensors (for ``inspect`` hints
and ``spec`` drafts). Entries live in :mod:`wtransplant.planning.layouts.layers`, one per type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wtransplant.errors import MappingError
from wtransplant.planning.layouts.ops import Op, Shape

CONVENTIONS = ("keras", "torch", "matlab", "plain")


@dataclass
class TargetVar:
    """One Keras variable to fill."""

    key: str  # "<layer>/<var>" as written in specs: "conv1/kernel", "bi/forward/kernel"
    layer: str
    var: str  # relative name within the layer: "kernel", "forward/recurrent_kernel"
    shape: Shape
    dtype: str = "float32"
    path: str = ""  # Keras' own variable.path
    index: int = 0  # position in model.weights

    def to_dict(self) -> dict:
        return {"key": self.key, "shape": list(self.shape), "dtype": self.dtype,
                "path": self.path}


@dataclass
class TargetLayer:
    """A Keras layer that owns variables, described without Keras (plain data)."""

    name: str
    class_name: str
    config: dict
    vars: list[TargetVar]
    index: int = 0
    input_shape: tuple | None = None  # one sample, no batch axis
    flatten_from: tuple | None = None  # (H, W, C) / (L, C): input is Flatten of this map
    inner_class: str | None = None  # Bidirectional / TimeDistributed: the wrapped class
    inner_config: dict | None = None
    #: how the source flattened that map: 'chw' (channels first, PyTorch), 'fortran'
    #: (column-major, MATLAB) or None (Keras' own H,W,C order); set by the plan
    flatten_order: str | None = None
    #: the graph between the input and its Flatten: 'mirrored: <why>' (a Permute/Reshape
    #: reorders the map as the source did: no automatic row permutation) or
    #: 'undecidable: <why>' (the spec must say `flatten:`); None otherwise
    flatten_note: str | None = None

    def var(self, name: str) -> TargetVar | None:
        return next((v for v in self.vars if v.var == name), None)


@dataclass
class Unit:
    """Source tensors that belong to one layer: a torch module, a Keras 2 layer group, the
    n-th numbered layer. ``tensors`` maps role -> tensor (a :class:`SourceTensor`)."""

    key: str
    tensors: dict
    order: int = 0

    def shape(self, role: str):
        t = self.tensors.get(role)
        return None if t is None else tuple(t.shape)

    def names(self) -> list[str]:
        return [t.name for t in self.tensors.values()]


@dataclass
class Proposal:
    """What a unit of source tensors looks like as a Keras layer."""

    keras_class: str
    args: dict
    slots: dict  # var -> list of source tensor names
    summary: str  # "Conv2d 3->8 3x3" in the source's own words
    in_features: int | None = None
    out_features: int | None = None
    decide: list = field(default_factory=list)  # what the user must decide
    kind: str = ""  # dense, conv2d, batchnorm, gru...

    def to_dict(self) -> dict:
        return {"keras_class": self.keras_class, "args": self.args, "slots": self.slots,
                "summary": self.summary, "in": self.in_features, "out": self.out_features,
                "decide": list(self.decide), "kind": self.kind}


class LayerLayout:
    """Base entry. Subclasses set ``classes`` and ``roles`` and override ``recipe``."""

    classes: tuple[str, ...] = ()
    #: convention -> var -> the source roles the recipe takes, in order; each item may
    #: list alternatives as 'scale|gamma|weight' ('*' is the fallback convention)
    roles: dict[str, dict[str, tuple[str, ...]]] = {}
    #: convention -> roles that are bookkeeping, never weights (torch num_batches_tracked)
    ignored_roles: dict[str, tuple[str, ...]] = {}

    def source_roles(self, var: str, convention: str, layer: TargetLayer) -> tuple[str, ...]:
        conv = self.roles.get(convention) or self.roles.get("*") or {}
        return conv.get(var) or conv.get("*") or (var,)

    def recipe(self, var: str, convention: str, shapes: list[Shape], layer: TargetLayer,
               target: TargetVar) -> list[Op]:
        """The ops taking the source arrays (shapes given, MATLAB view for column-major
        files) to the Keras layout of ``target``. Raise MappingError if nothing fits."""
        return single(shapes, target)

    def checks(self, layer: TargetLayer, convention: str) -> list[str]:
        """Warnings about the layer's settings under this convention."""
        return []

    def recognize(self, unit: Unit, convention: str) -> Proposal | None:
        return None

    def describe(self) -> str:
        return ", ".join(self.classes)


def single(shapes: list[Shape], target: TargetVar) -> list[Op]:
    if len(shapes) != 1:
        raise MappingError(f"{target.key} takes one source tensor, got {len(shapes)}")
    return []


def mismatch(target: TargetVar, shapes, why: str = "") -> MappingError:
    shp = " + ".join(str(tuple(s)) for s in shapes)
    msg = f"{target.key}: source shape {shp} does not fit Keras shape {tuple(target.shape)}"
    return MappingError(f"{msg}: {why}" if why else msg)
