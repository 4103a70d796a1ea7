"""Which program wrote a file, and the file's tensors under the names its users know.

One :class:`FormatReader` per format, registered in :data:`READERS` in priority order. Each
says whether a :class:`~wtransplant.reading.tree.FileTree` is its format (with the evidence that
decided it), which layout convention its tensors follow, and lists the file's tensors as
:class:`SourceTensor` objects: the logical name a spec uses (``features.0.weight``,
``conv1/kernel``, ``net.W1``), the HDF5 path, and the shape in the writer's own view
(MATLAB's view for column-major writers, whose arrays h5py shows with axes reversed).

Adding a format means adding one reader class here. Only h5py/numpy are needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wtransplant.planning.layouts.base import Unit
from wtransplant.reading.tree import FileTree

FORMATS = (
    "keras-legacy-model",
    "keras-legacy-weights",
    "keras3-weights",
    "keras3-archive",
    "matlab-v7.3",
    "octave",
    "torch-state-dict",
    "layered",
    "generic-hdf5",
    # containers that are not HDF5 name their format; the tensor names still decide the
    # convention (reading/sources/)
    "safetensors",
    "npz",
    "npy",
)


@dataclass
class Detection:
    format: str
    convention: str  # keras | torch | matlab | plain
    writer: str | None = None
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"format": self.format, "convention": self.convention, "writer": self.writer,
                "evidence": list(self.evidence)}


@dataclass(slots=True)
class SourceTensor:
    """One tensor of the source file, under its logical name."""

    name: str  # what specs call it: features.0.weight, dense/kernel, net.W1, Weights/Layer1
    path: str  # HDF5 dataset path
    shape: tuple  # in the writer's own view (MATLAB view for column-major files)
    stored_shape: tuple  # as h5py shows it
    dtype: str
    group: str = ""  # candidate layer: torch module, Keras layer, layer number
    role: str = ""  # weight, bias, running_mean, kernel, 0, 1 ...
    column_major: bool = False  # written by MATLAB/Octave: axes reversed in h5py's view
    index: int = 0  # position in the file's own order

    def to_dict(self) -> dict:
        d = {"name": self.name, "path": self.path, "shape": list(self.shape),
             "stored_shape": list(self.stored_shape), "dtype": self.dtype, "group": self.group,
             "role": self.role}
        if self.column_major:
            d["column_major"] = True
        return d


_DIGITS = re.compile(r"(\d+)")


def natural_key(s: str):
    """Sort key that orders 'layer2' before 'layer10' and 'features.2' before 'features.10'."""
    parts = _DIGITS.split(s)
    # split() with a group alternates text, digits, text...: position i holds the same kind
    # in every key, so ints only ever meet ints
    parts[1::2] = map(int, parts[1::2])
    return parts


class FormatReader:
    name = "generic-hdf5"
    convention = "plain"

    def detect(self, tree: FileTree) -> Detection | None:
        raise NotImplementedError

    def unit_key(self, t: SourceTensor) -> tuple[str, str]:
        """(unit, role) of a tensor: which layer it belongs to and what it is there."""
        return t.group, t.role

    def units(self, tensors: list[SourceTensor]) -> list[Unit]:
        """Group tensors into units (one per source layer), in the file's order."""
        out: dict[str, Unit] = {}
        for t in tensors:
            key, role = self.unit_key(t)
            u = out.setdefault(key, Unit(key, {}, order=len(out)))
            if role in u.tensors:  # two tensors, one role: keep both visible
                role = t.name
            u.tensors[role] = t
        return list(out.values())

    #: how a dataset path becomes a tensor name: the separator between group and leaf
    separator = "/"

    def logical_name(self, path: str) -> str:
        return path.lstrip("/")

    def tensors(self, tree: FileTree) -> list[SourceTensor]:
        out = []
        for ds in tree.numeric_datasets():
            name = self.logical_name(ds.path)
            grp, _, role = name.rpartition(self.separator)
            out.append(SourceTensor(name, ds.path, ds.shape, ds.shape, ds.dtype, grp, role))
        out.sort(key=lambda t: natural_key(t.name))
        for i, t in enumerate(out):
            t.index = i
        return out


# --------------------------------------------------------------------------------------
# Keras


def keras_attr_list(attrs: dict, name: str) -> list[str] | None:
    """A Keras 2 list attribute, joining the ``name0``, ``name1``... chunks large ones are
    split into."""
    if name in attrs:
        v = attrs[name]
        return [v] if isinstance(v, str) else [str(x) for x in v]
    chunks = []
    i = 0
    while f"{name}{i}" in attrs:
        v = attrs[f"{name}{i}"]
        chunks.extend([v] if isinstance(v, str) else [str(x) for x in v])
        i += 1
    return chunks if i else None


def _keras_writer(attrs: dict) -> str | None:
    ver = attrs.get("keras_version")
    backend = attrs.get("backend")
    if ver is None:
        return None
    w = f"Keras {ver}"
    return f"{w} ({backend} backend)" if backend else w


class KerasLegacyModel(FormatReader):
    name = "keras-legacy-model"
    convention = "keras"

    def detect(self, tree):
        a = tree.root_attrs
        if "model_config" not in a:
            return None
        ev = ["root attribute 'model_config' (a Keras 2 full-model H5 file)"]
        if "model_weights" in tree.groups:
            ev.append("group /model_weights with the weights")
        if "training_config" in a:
            ev.append("root attribute 'training_config'")
        return Detection(self.name, self.convention, _keras_writer(a), ev)

    def unit_key(self, t):
        return t.group, keras_role(t.name, t.group)

    def weights_root(self, tree) -> str:
        return "/model_weights" if "/model_weights" in tree.groups else "/"

    def tensors(self, tree):
        return keras_legacy_tensors(tree, self.weights_root(tree))


class KerasLegacyWeights(KerasLegacyModel):
    name = "keras-legacy-weights"

    def detect(self, tree):
        a = tree.root_attrs
        names = keras_attr_list(a, "layer_names")
        if names is None:
            return None
        ev = [f"root attribute 'layer_names' ({len(names)} layers) with per-layer "
              f"'weight_names' (Keras 2 / tf.keras save_weights)"]
        return Detection(self.name, self.convention, _keras_writer(a), ev)


def keras_legacy_tensors(tree: FileTree, root: str) -> list[SourceTensor]:
    base = "" if root == "/" else root
    rattrs = tree.groups[root].attrs
    out: list[SourceTensor] = []
    for layer in keras_attr_list(rattrs, "layer_names") or []:
        g = tree.groups.get(f"{base}/{layer}")
        if g is None:
            continue
        for wn in keras_attr_list(g.attrs, "weight_names") or []:
            ds = tree.datasets.get(f"{base}/{layer}/{wn}")
            if ds is None or not ds.numeric:
                continue
            logical = wn[:-2] if wn.endswith(":0") else wn
            role = logical.rsplit("/", 1)[-1]
            out.append(SourceTensor(logical, ds.path, ds.shape, ds.shape, ds.dtype, layer, role,
                                    index=len(out)))
    return out


def keras_role(name: str, layer: str) -> str:
    """Role of a Keras 2 weight inside its layer: 'kernel', or 'forward/kernel' for the
    halves of a Bidirectional wrapper (``bi/forward_gru/gru_cell/kernel``)."""
    parts = name.split("/")
    if parts and parts[0] == layer:
        parts = parts[1:]
    direction = next((p.split("_", 1)[0] for p in parts[:-1]
                      if p.startswith(("forward_", "backward_"))), None)
    return f"{direction}/{parts[-1]}" if direction else parts[-1]


class Keras3Archive(FormatReader):
    name = "keras3-archive"
    convention = "keras"

    def detect(self, tree):
        if tree.archive is None:
            return None
        meta = tree.archive.metadata or {}
        ev = [f"zip archive holding {', '.join(tree.archive.members)}"]
        if tree.archive.config:
            ev.append(f"config.json: {tree.archive.config.get('class_name', '?')} model")
        writer = f"Keras {meta['keras_version']}" if meta.get("keras_version") else None
        return Detection(self.name, self.convention, writer, ev)

    def tensors(self, tree):
        return keras3_tensors(tree)


class Keras3Weights(FormatReader):
    name = "keras3-weights"
    convention = "keras"

    def detect(self, tree):
        vars_paths = [p for p in tree.datasets if "/vars/" in p]
        if not vars_paths:
            return None
        top = {p.split("/")[1] for p in vars_paths}
        if not top & {"layers", "vars", "_layer_checkpoint_dependencies"}:
            return None
        ev = [f"{len(vars_paths)} datasets under '<object>/vars/<i>' "
              f"(Keras 3 save_weights layout), top-level groups {sorted(top)}"]
        return Detection(self.name, self.convention, None, ev)

    def tensors(self, tree):
        return keras3_tensors(tree)


def keras3_tensors(tree: FileTree) -> list[SourceTensor]:
    out = []
    for ds in tree.numeric_datasets():
        p = ds.path
        if "/vars/" not in p:
            continue
        grp, _, role = p.lstrip("/").rpartition("/vars/")
        if grp.startswith("optimizer") or grp.startswith("metrics"):
            role = "optimizer-state"
        out.append(SourceTensor(p.lstrip("/"), p, ds.shape, ds.shape, ds.dtype, grp, role))
    out.sort(key=lambda t: natural_key(t.name))
    for i, t in enumerate(out):
        t.index = i
    return out


def keras3_group_names(tree: FileTree) -> dict[str, str]:
    """Keras 3.15+ stores the user's layer name as a ``name`` attribute of each
    ``layers/<auto name>`` group; map group path -> user name."""
    return {p.lstrip("/"): g.attrs["name"] for p, g in tree.groups.items()
            if isinstance(g.attrs.get("name"), str)}


# --------------------------------------------------------------------------------------
# MATLAB v7.3 and GNU Octave (column-major writers)

MATLAB_NUMERIC = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                  "int64", "uint64", "logical"}


class NumberedUnits:
    """Units for writers that number layers: W1/b1, net.W2, Weights/Layer3."""

    def unit_key(self, t):
        r = numbered_role(t.name)
        if r:
            return f"layer{r[1]}", r[0]
        return t.name, t.role


class MatlabV73(NumberedUnits, FormatReader):
    name = "matlab-v7.3"
    convention = "matlab"

    def detect(self, tree):
        ub = tree.userblock_text
        classes = sum(1 for n in (*tree.datasets.values(), *tree.groups.values())
                      if "MATLAB_class" in n.attrs)
        if not ub.startswith("MATLAB 7.3 MAT-file") and not classes:
            return None
        ev = []
        writer = None
        if ub.startswith("MATLAB"):
            ev.append(f"{len(tree.userblock) and 512}-byte userblock: {ub[:60]!r}")
            m = re.search(r"Platform:\s*([^,]+)", ub)
            if m:
                plat = m.group(1).strip()
                writer = plat if not re.fullmatch(r"[A-Z0-9_]+", plat) else f"MATLAB ({plat})"
        if classes:
            ev.append(f"{classes} objects with a MATLAB_class attribute")
        if "/#refs#" in tree.groups:
            ev.append("a #refs# group (cell arrays / references)")
        return Detection(self.name, self.convention, writer, ev)

    def tensors(self, tree):
        out: list[SourceTensor] = []

        def visit_group(gpath: str, prefix: str):
            for child in tree.children(gpath):
                base = child.rsplit("/", 1)[-1]
                if gpath == "/" and base.startswith("#"):
                    continue
                name = f"{prefix}{base}"
                node = tree.node(child)
                if child in tree.groups:
                    if node.attrs.get("MATLAB_class") == "struct":
                        visit_group(child, name + ".")
                    continue
                if child not in tree.datasets:
                    continue
                cls = node.attrs.get("MATLAB_class")
                if node.attrs.get("MATLAB_empty"):
                    continue
                if cls == "cell" and node.kind == "reference":
                    out.append(SourceTensor(name, child, (), node.shape, "cell", prefix, base,
                                            column_major=True))
                    continue
                if (cls in MATLAB_NUMERIC or cls is None) and node.numeric:
                    out.append(SourceTensor(name, child, tuple(reversed(node.shape)),
                                            node.shape, node.dtype, prefix.rstrip("."), base,
                                            column_major=True))

        visit_group("/", "")
        for i, t in enumerate(out):
            t.index = i
        return [t for t in out if t.dtype != "cell"]


OCTAVE_NUMERIC = re.compile(
    r"^(matrix|scalar|float matrix|float scalar|bool matrix|bool|"
    r"(u?int(8|16|32|64)) (matrix|scalar))$")


class Octave(NumberedUnits, FormatReader):
    name = "octave"
    convention = "matlab"

    def detect(self, tree):
        comment = tree.comment or ""
        octave_groups = [g for p, g in tree.groups.items() if "OCTAVE_NEW_FORMAT" in g.attrs]
        typed = [p for p in tree.groups if f"{p}/type" in tree.datasets]
        if not octave_groups and not comment.startswith("# Created by Octave"):
            return None
        ev = []
        writer = None
        m = re.match(r"# Created by Octave ([\w.]+)", comment)
        if m:
            writer = f"GNU Octave {m.group(1)}"
            ev.append(f"root comment {comment[:60]!r}")
        ev.append(f"{len(typed)} variables as groups with 'type'/'value' datasets "
                  f"(Octave save -hdf5), OCTAVE_NEW_FORMAT attributes")
        return Detection(self.name, self.convention, writer or "GNU Octave", ev)

    def tensors(self, tree):
        out: list[SourceTensor] = []
        types = octave_types(tree)

        def visit(gpath: str, prefix: str):
            for child in tree.children(gpath):
                base = child.rsplit("/", 1)[-1]
                t = types.get(child)
                if t is None:
                    continue
                value = f"{child}/value"
                if t in ("scalar struct",):
                    visit(value, f"{prefix}{base}.")
                elif t == "cell":
                    for el in tree.children(value):
                        eb = el.rsplit("/", 1)[-1]
                        if eb.startswith("_") and eb[1:].isdigit() and types.get(el):
                            _add(el, f"{prefix}{base}{{{int(eb[1:]) + 1}}}", types[el],
                                 f"{prefix}{base}")
                else:
                    _add(child, f"{prefix}{base}", t, prefix.rstrip("."))

        def _add(gpath, name, t, grp):
            ds = tree.datasets.get(f"{gpath}/value")
            if ds is None or not OCTAVE_NUMERIC.match(t) or not ds.numeric:
                return
            out.append(SourceTensor(name, ds.path, tuple(reversed(ds.shape)), ds.shape,
                                    ds.dtype, grp, name.rsplit(".", 1)[-1], column_major=True))

        visit("/", "")
        for i, t in enumerate(out):
            t.index = i
        return out


def octave_types(tree: FileTree) -> dict[str, str]:
    """group path -> Octave type string ('matrix', 'scalar struct', 'cell'...) for every
    Octave variable group (the walk reads these few-byte scalar strings)."""
    return {p: ds.value for p in tree.groups
            if (ds := tree.datasets.get(f"{p}/type")) is not None and ds.value is not None}


# --------------------------------------------------------------------------------------
# PyTorch state_dict dumped with h5py

TORCH_LEAVES = re.compile(
    r"^(weight|bias|running_mean|running_var|num_batches_tracked|"
    r"(weight|bias)_(ih|hh)_l\d+(_reverse)?|weight_hr_l\d+(_reverse)?|"
    r"in_proj_weight|in_proj_bias|in_proj_[qkv]_weight|pos_embedding|cls_token)$")
TORCH_SPECIFIC = re.compile(r"^(running_mean|running_var|num_batches_tracked|"
                            r"(weight|bias)_(ih|hh)_l\d+(_reverse)?|in_proj_weight)$")


def torch_name(path: str) -> str:
    return path.lstrip("/").replace("/", ".")


TORCH_RNN_PARAM = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


class TorchStateDict(FormatReader):
    name = "torch-state-dict"
    convention = "torch"

    def unit_key(self, t):
        m = TORCH_RNN_PARAM.match(t.role)
        if m:  # one unit per stacked RNN layer: rnn#l0, rnn#l1; roles weight_ih(_reverse)
            return f"{t.group}#l{m.group(3)}", f"{m.group(1)}_{m.group(2)}{m.group(4) or ''}"
        return t.group, t.role

    def detect(self, tree):
        ds = tree.numeric_datasets()
        if not ds:
            return None
        names = [torch_name(d.path) for d in ds]
        leaves = [n.rsplit(".", 1)[-1] for n in names]
        torchy = sum(bool(TORCH_LEAVES.match(lf)) for lf in leaves)
        specific = sorted({lf for lf in leaves if TORCH_SPECIFIC.match(lf)})
        dotted = sum("." in d.path for d in ds)
        nested = len(ds) - dotted
        if torchy / len(ds) < 0.8 or not (specific or dotted or all("/" in n.strip("/")
                                                                    for n in names)):
            return None
        if torchy < 2:
            return None
        ev = [f"{torchy} of {len(ds)} tensors end in PyTorch parameter names "
              f"(weight, bias, ...)"]
        if specific:
            ev.append(f"PyTorch-specific names: {', '.join(specific[:4])}")
        if dotted:
            ev.append(f"{dotted} dotted state_dict keys such as {names[0]!r}")
        elif nested:
            ev.append("keys split into nested groups (module/param)")
        return Detection(self.name, self.convention, "h5py (PyTorch state_dict naming)", ev)

    separator = "."

    def logical_name(self, path: str) -> str:
        return torch_name(path)


# --------------------------------------------------------------------------------------
# Home-made numbered layers: Weights/Layer1 + Bias/Layer1, layer1/W + layer1/b, W1 + b1

WEIGHT_WORDS = re.compile(r"(?i)^(weights?|w|kernels?|wts|wgt)$")
BIAS_WORDS = re.compile(r"(?i)^(bias(es)?|b|offsets?)$")
_SPLIT = re.compile(r"[/_.\-]+|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")


def numbered_role(path: str) -> tuple[str, int] | None:
    """('weight'|'bias', layer number) if a path names a numbered layer's weight or bias."""
    tokens = [t for t in _SPLIT.split(path.strip("/")) if t]
    nums = [int(t) for t in tokens if t.isdigit()]
    words = [t for t in tokens if not t.isdigit() and not re.fullmatch(r"(?i)layers?|l", t)]
    if len(nums) != 1 or not words:
        return None
    if any(WEIGHT_WORDS.match(w) for w in words):
        return "weight", nums[0]
    if any(BIAS_WORDS.match(w) for w in words):
        return "bias", nums[0]
    return None


IO_NAMES = re.compile(r"(?i)^(io[/_.])?(x|y|inputs?|outputs?|targets?|expected|"
                      r"(x|y)_?(test|ref|reference)|(test|ref)_?(x|y))$")


class Layered(NumberedUnits, FormatReader):
    name = "layered"
    convention = "plain"

    def detect(self, tree):
        ds = tree.numeric_datasets()
        roles = {}
        for d in ds:
            r = numbered_role(d.path)
            if r:
                roles.setdefault(r[1], set()).add(r[0])
        weights = sorted(n for n, rs in roles.items() if "weight" in rs)
        if len(weights) < 1:
            return None
        rest = [d for d in ds if not numbered_role(d.path) and not IO_NAMES.match(
            d.path.strip("/"))]
        if len(rest) > len(ds) // 2:
            return None
        paired = sum(1 for n in weights if "bias" in roles[n])
        ev = [f"{len(weights)} numbered weight tensors (layers {weights[0]}..{weights[-1]}), "
              f"{paired} with a matching bias"]
        sample = next(d.path for d in ds if numbered_role(d.path))
        ev.append(f"e.g. {sample!r}")
        return Detection(self.name, self.convention, None, ev)

    def tensors(self, tree):
        out = super().tensors(tree)
        out.sort(key=lambda t: ((r[1], r[0] != "weight") if (r := numbered_role(t.name))
                                else (1 << 30, False), natural_key(t.name)))
        for i, t in enumerate(out):
            t.index = i
        return out


class GenericHDF5(NumberedUnits, FormatReader):
    name = "generic-hdf5"
    convention = "plain"

    def detect(self, tree):
        n = len(tree.numeric_datasets())
        return Detection(self.name, self.convention, None,
                         [f"no known writer's layout matched; {n} numeric datasets"])


#: Readers in the order they are tried: most specific first.
READERS: list[FormatReader] = [
    Keras3Archive(),
    KerasLegacyModel(),
    KerasLegacyWeights(),
    Keras3Weights(),
    MatlabV73(),
    Octave(),
    TorchStateDict(),
    Layered(),
    GenericHDF5(),
]
READER_BY_NAME = {r.name: r for r in READERS}


def detect(tree: FileTree) -> tuple[Detection, FormatReader]:
    for r in READERS:
        d = r.detect(tree)
        if d is not None:
            return d, r
    raise AssertionError("GenericHDF5 always matches")


def reader_for(fmt: str) -> FormatReader:
    return READER_BY_NAME[fmt]
