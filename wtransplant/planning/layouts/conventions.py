"""Conventions: how a writer stores its tensors, as a name that selects methods.

A convention is registered once here (:func:`register_convention`): its name, the
convention it inherits from, and the few facts that hold for every layer type (how its
writer flattens a feature map, the RNN gate order it stores...). Everything that depends on
the layer type lives with the layer type, as one method per (aspect, convention):

* a layout entry (:mod:`wtransplant.planning.layouts.layers`) has ``recipe_torch``,
  ``checks_torch``, ``recognize_torch``, ``draft_guesses_torch``, ``source_roles_torch``...;
* an entry of the NumPy reference (:mod:`wtransplant.checking.reference`) has
  ``forward_torch``, ``kernel_torch``...

:func:`find_method` picks the method the way tf2onnx picks a handler per op and opset: the
convention's own method, else its parent's, and so on up the chain, else ``<aspect>_any``
(the same under every convention). Nothing found, or a method set to ``None``: the layer
type is not supported under that convention, and the caller says so in one line.

Adding a convention (say ``onnx``: PyTorch's layouts, ONNX's own RNN gate orders) is one
call here plus the methods where it differs, which may be written in the entries' class
bodies or, from the convention's own module, with :func:`layout_method`::

    register_convention(Convention("onnx", parent="torch", about="...",
                                   gates={"GRU": "zrh", "LSTM": "iofc"}))

    @layout_method("GRU", "recipe", "onnx")   # the entry holding GRU, LSTM, SimpleRNN
    def recipe_onnx(self, var, convention, shapes, layer, target): ...

Layer 1: no Keras, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wtransplant.errors import InputError

#: a fact left as INHERIT is taken from the parent convention
INHERIT = object()

#: the per-(layer type, convention) aspects a layout entry may define
LAYOUT_ASPECTS = ("recipe", "checks", "recognize", "source_roles", "draft_guesses")


@dataclass(frozen=True, eq=False)
class Convention:
    """One way of storing tensors. Facts left as :data:`INHERIT` come from ``parent``."""

    name: str
    parent: str | None = None
    about: str = ""  # one line for docs and error messages
    #: how the writer flattens a feature map before a dense layer: 'chw' (channels first,
    #: PyTorch), 'fortran' (column-major, MATLAB) or None (Keras' own H,W,C order)
    flatten_order: object = INHERIT
    #: the RNN gate order the convention's conversion assumes the source stores (the spec's
    #: ``gates:`` reorders from what the file holds to this), per Keras class
    gates: object = INHERIT
    #: True: the source stacks gate blocks on the first axis of every stored tensor, so a
    #: ``gates:`` reorder runs before the conversion; False: after it, on Keras' last axis
    gates_on_source_axis: object = INHERIT
    #: a layer type with no layout entry is copied as stored (Keras' own files)
    copies_unknown_layers: object = INHERIT
    #: the writer's inputs are channels-first (drafts write ``input_layout``)
    channels_first: object = INHERIT
    #: a draft with no guess left rebuilds as written (False: the draft always asks for a look)
    drafts_rebuild_as_is: object = INHERIT
    #: the orientation of a 2-D weight is told by its shape only (a square one is a guess)
    orientation_from_shape: object = INHERIT
    #: drafts: the comment written on a Flatten that feeds a Dense (None: no comment)
    draft_flatten_note: object = INHERIT
    #: methods this convention added to layout entries from outside their class bodies
    added: list = field(default_factory=list, repr=False)

    def chain(self) -> tuple[str, ...]:
        """This convention's name, then its parent's, up to the root."""
        out, c = [], self
        while c is not None:
            if c.name in out:
                raise ValueError(f"convention {c.name!r} inherits from itself")
            out.append(c.name)
            c = _REGISTRY.get(c.parent) if c.parent else None
        return tuple(out)

    def fact(self, name: str):
        """A convention-wide fact, inherited along the chain (None if nobody sets it)."""
        for cname in self.chain():
            v = getattr(_REGISTRY[cname], name)
            if v is not INHERIT:
                return v
        return _DEFAULTS.get(name)


#: what a fact is when no convention in the chain sets it
_DEFAULTS = {"flatten_order": None, "gates": {"GRU": "zrh", "LSTM": "ifco"},
             "gates_on_source_axis": False, "copies_unknown_layers": False,
             "channels_first": False, "drafts_rebuild_as_is": True,
             "orientation_from_shape": False, "draft_flatten_note": None}

_REGISTRY: dict[str, Convention] = {}


def register_convention(conv: Convention) -> Convention:
    if conv.name in _REGISTRY or conv.name in ("auto", "any", "*") or \
            not conv.name.isidentifier():
        raise ValueError(f"convention name {conv.name!r} is taken or not an identifier")
    if conv.parent is not None and conv.parent not in _REGISTRY:
        raise ValueError(f"convention {conv.name!r}: parent {conv.parent!r} is not "
                         f"registered")
    _REGISTRY[conv.name] = conv
    return conv


def unregister_convention(name: str) -> None:
    """Remove a convention and the methods it added to layout entries (tests, plug-ins)."""
    conv = _REGISTRY.pop(name, None)
    if conv is None:
        return
    for cls, attr in conv.added:
        if attr in vars(cls):
            delattr(cls, attr)
    conv.added.clear()


def convention_names() -> tuple[str, ...]:
    """Registered conventions, in registration order (``auto`` is not one)."""
    return tuple(_REGISTRY)


def get_convention(name: str) -> Convention:
    c = _REGISTRY.get(name)
    if c is None:
        raise InputError(f"unknown convention {name!r} (expected one of: "
                         f"{', '.join(('auto',) + convention_names())})")
    return c


def chain(name: str) -> tuple[str, ...]:
    """The names tried for ``name``'s methods, most specific first; an unknown name is
    tried alone (its methods, then ``_any``)."""
    c = _REGISTRY.get(name)
    return c.chain() if c is not None else (name,)


def fact(name: str, what: str):
    """``get_convention(name).fact(what)``."""
    return get_convention(name).fact(what)


_MISSING = object()


def find_method(obj, aspect: str, convention: str):
    """The bound method ``<aspect>_<c>`` of ``obj`` for the first ``c`` in the convention's
    chain, else ``<aspect>_any``; None if there is none or the first one found is None
    (set to None: explicitly not supported under that convention)."""
    for c in (*chain(convention), "any"):
        m = getattr(obj, f"{aspect}_{c}", _MISSING)
        if m is not _MISSING:
            return m
    return None


def layout_method(class_name: str, aspect: str, convention: str):
    """Decorator: add ``fn`` as the ``<aspect>_<convention>`` method of the layout entry
    that holds the Keras class ``class_name``, from outside ``layers.py``. Refuses to replace
    a method that entry class already defines for that convention."""
    from wtransplant.planning.layouts.layers import layout_for

    if aspect not in LAYOUT_ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r} (one of {', '.join(LAYOUT_ASPECTS)})")
    entry = layout_for(class_name)
    if entry is None:
        raise ValueError(f"no layout entry for {class_name!r}")
    return add_method(type(entry), aspect, convention)


def add_method(cls: type, aspect: str, convention: str):
    """Decorator: ``fn`` becomes ``cls.<aspect>_<convention>``, recorded on the convention
    (so :func:`unregister_convention` takes it away again)."""
    conv = get_convention(convention)
    attr = f"{aspect}_{convention}"

    def deco(fn):
        if attr in vars(cls):
            raise ValueError(f"{cls.__name__}.{attr} is already defined")
        setattr(cls, attr, fn)
        conv.added.append((cls, attr))
        return fn

    return deco


# --------------------------------------------------------------------------------------
# the built-in conventions (the public contract: README, docs/layouts.md)

register_convention(Convention(
    "keras", about="Keras layouts (Keras 2, tf_keras and Keras 3 files)",
    copies_unknown_layers=True))
register_convention(Convention(
    "torch", about="PyTorch layouts: Linear (out,in), ConvNd (out,in,k...), GRU r,z,n, "
                   "NCHW inputs",
    flatten_order="chw", gates={"GRU": "rzh", "LSTM": "ifco"}, gates_on_source_axis=True,
    channels_first=True, drafts_rebuild_as_is=False,
    draft_flatten_note="PyTorch flattens C,H,W: rows are permuted automatically"))
register_convention(Convention(
    "matlab", about="MATLAB/Octave: column-major arrays in MATLAB's own view, dense weights "
                    "out-by-in",
    flatten_order="fortran"))
register_convention(Convention(
    "plain", about="row-major arrays whose orientation is told by shape",
    orientation_from_shape=True))
