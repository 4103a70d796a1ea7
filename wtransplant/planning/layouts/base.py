"""The registry's vocabulary: target layers/variables, source units, proposals, entries.

A :class:`LayerLayout` is everything wtransplant knows about one Keras layer type:
which source roles feed each of its variables under each convention, the recipe that
converts them (a list of :mod:`~wtransplant.planning.layouts.ops`), checks of the layer's settings
against the convention (a BatchNorm epsilon left at Keras' default under ``torch``...), a
recognizer that guesses the layer from a group of source tensors (for ``inspect`` hints
and ``spec`` drafts) and the guesses a draft must mark. Each is one method per convention
(``recipe_torch``...), picked by :func:`~wtransplant.planning.layouts.conventions.
find_method`. Entries live in :mod:`wtransplant.planning.layouts.layers`, one per type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wtransplant.errors import MappingError
from wtransplant.planning.layouts import conventions
from wtransplant.planning.layouts.conventions import find_method
from wtransplant.planning.layouts.ops import Op, Shape

#: the built-in conventions (``conventions.convention_names()`` lists every registered one)
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
    """Base entry. Subclasses set ``classes`` and ``roles`` and write one method per
    (aspect, convention): ``recipe_torch``, ``checks_torch``, ``recognize_keras``... with
    the signature of the dispatcher of the same aspect below (``convention`` is the name
    asked for, which may be a child of the method's own: ``onnx`` served by ``_torch``).
    ``<aspect>_any`` serves every convention; a method set to None says "not under this
    one". See :mod:`wtransplant.planning.layouts.conventions` for the lookup."""

    classes: tuple[str, ...] = ()
    #: convention -> var -> the source roles the recipe takes, in order; each item may
    #: list alternatives as 'scale|gamma|weight' ('*' serves every convention not listed
    #: whose chain names none listed)
    roles: dict[str, dict[str, tuple[str, ...]]] = {}
    #: convention -> roles that are bookkeeping, never weights (torch num_batches_tracked)
    ignored_roles: dict[str, tuple[str, ...]] = {}

    def method(self, aspect: str, convention: str):
        """This entry's method for (aspect, convention), or None: not supported."""
        return find_method(self, aspect, convention)

    # -- dispatchers: the public API, one per aspect ------------------------------------

    def recipe(self, var: str, convention: str, shapes: list[Shape], layer: TargetLayer,
               target: TargetVar) -> list[Op]:
        """The ops taking the source arrays (shapes given, MATLAB view for column-major
        files) to the Keras layout of ``target``. Raise MappingError if nothing fits, or
        if the layer type has no recipe under this convention."""
        fn = self.method("recipe", convention)
        if fn is None:
            raise not_supported(target.key, layer.class_name, convention)
        return fn(var, convention, shapes, layer, target)

    def checks(self, layer: TargetLayer, convention: str) -> list[str]:
        """Warnings about the layer's settings under this convention (none if no method)."""
        fn = self.method("checks", convention)
        return [] if fn is None else fn(layer, convention)

    def recognize(self, unit: Unit, convention: str) -> Proposal | None:
        """The layer a unit of source tensors looks like (None if no method, or no fit)."""
        fn = self.method("recognize", convention)
        return None if fn is None else fn(unit, convention)

    def source_roles(self, var: str, convention: str, layer: TargetLayer) -> tuple[str, ...]:
        fn = self.method("source_roles", convention)
        return fn(var, convention, layer)

    def draft_guesses(self, convention: str, proposal: Proposal, args: dict) -> DraftGuess:
        """What a draft spec must write as a guess for this layer (``{undecided: ...}``)
        beyond what the tensors fix: the arguments to set and the to-do line."""
        fn = self.method("draft_guesses", convention)
        return DraftGuess() if fn is None else fn(convention, proposal, args)

    # -- the defaults every convention shares --------------------------------------------

    def source_roles_any(self, var: str, convention: str, layer: TargetLayer):
        return self.roles_for(var, convention)

    def roles_for(self, var: str, convention: str) -> tuple[str, ...]:
        """``roles`` for the first convention of the chain that lists any, else '*'."""
        table = next((self.roles[c] for c in conventions.chain(convention)
                      if c in self.roles), None) or self.roles.get("*") or {}
        return table.get(var) or table.get("*") or (var,)

    def bookkeeping_roles(self, convention: str) -> tuple[str, ...]:
        """``ignored_roles`` along the convention's chain."""
        return next((self.ignored_roles[c] for c in conventions.chain(convention)
                     if c in self.ignored_roles), ())

    def describe(self) -> str:
        return ", ".join(self.classes)


@dataclass
class DraftGuess:
    """What a draft writes as guesses for one layer: ``args`` to set (each an
    ``{undecided: [...], why: ...}``) and ``todo``, the text after "<layer name>: " in the
    draft's list of guesses (empty: nothing guessed)."""

    args: dict = field(default_factory=dict)
    todo: str = ""


class NotSupported(MappingError):
    """A layer type has no method for an aspect under a convention (nor under any
    convention it inherits from, nor ``_any``)."""


def not_supported(key: str, class_name: str, convention: str) -> NotSupported:
    return NotSupported(
        f"{key}: {class_name} is not supported under the {convention} convention (its "
        f"layout entry has no recipe for it); give 'transpose'/'reshape' explicitly in the "
        f"spec's weights entry, or choose another convention")


def single(shapes: list[Shape], target: TargetVar) -> list[Op]:
    if len(shapes) != 1:
        raise MappingError(f"{target.key} takes one source tensor, got {len(shapes)}")
    return []


def mismatch(target: TargetVar, shapes, why: str = "") -> MappingError:
    shp = " + ".join(str(tuple(s)) for s in shapes)
    msg = f"{target.key}: source shape {shp} does not fit Keras shape {tuple(target.shape)}"
    return MappingError(f"{msg}: {why}" if why else msg)
