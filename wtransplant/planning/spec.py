"""The spec: what to build and where each Keras variable's values come from.

YAML or JSON (JSON is read by the same safe YAML parser, so both get line numbers).
Validation is strict: an unknown key, a wrong type or a missing key is an error that names
the file, the line, the key and what was expected. Only ``yaml.safe_load`` semantics are
accepted: a Python tag (``!!python/object``...) is refused. See ``docs/spec.md``.

An undecided choice (what a draft could not know) is written in place of any value as
``{undecided: [cand1, cand2, ...], why: "..."}``. :func:`load_spec` takes the first candidate
so that the rest of the spec validates, and lists every such choice in ``Spec.undecided``
(where, layer, key, candidates, line); ``rebuild`` refuses a spec with any of them unless
forced, and then marks its result unverified.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wtransplant.errors import InputError, UnsafeInputError

#: the built-in conventions; a spec may name any registered one (layouts/conventions.py)
CONVENTIONS = ("auto", "keras", "torch", "matlab", "plain")
LAYOUTS = ("nchw", "ncl", "ncdhw", "nhwc", "nlc", "ndhwc", "none")

TOP_KEYS = {"version", "source", "convention", "model", "weights", "rules", "verify",
            "options", "name"}
MODEL_KEYS = {"input_shape", "input_dtype", "layers", "keras_config", "application", "name",
              "inputs", "outputs"}
WEIGHT_KEYS = {"from", "transpose", "reshape", "flatten", "convert", "gates"}
RULE_KEYS = {"match", "to"}
VERIFY_KEYS = {"inputs", "expected", "input_layout", "output_layout", "atol", "rtol",
               "samples", "reference"}
OPTION_KEYS = {"allow_missing", "allow_reuse", "ignore", "match_by_name", "match_by_order",
               "follow_links"}
APP_KEYS = {"name", "args"}
FLATTEN = ("auto", "chw", "whc", "fortran", "none")


@dataclass
class WeightRef:
    """Where one Keras variable comes from."""

    sources: list[str]
    transpose: tuple | None = None  # explicit: no automatic conversion
    reshape: tuple | None = None
    flatten: str = "auto"  # Dense-after-Flatten row order: auto | chw | whc | fortran | none
    convert: bool = True  # False: take the array as is (after any transpose/reshape)
    line: int | None = None
    #: the source's RNN gate order (GRU: letters z,r,h/n; LSTM: i,f,c/g,o), e.g. "rzn"
    gates: str | None = None

    @property
    def explicit(self) -> bool:
        return self.transpose is not None or self.reshape is not None or not self.convert

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"from": self.sources if len(self.sources) > 1 else self.sources[0]}
        if self.transpose is not None:
            d["transpose"] = list(self.transpose)
        if self.reshape is not None:
            d["reshape"] = list(self.reshape)
        if self.flatten != "auto":
            d["flatten"] = self.flatten
        if not self.convert:
            d["convert"] = False
        if self.gates:
            d["gates"] = self.gates
        return d


@dataclass
class Rule:
    match: re.Pattern
    to: str
    line: int | None = None

    def to_dict(self) -> dict:
        return {"match": self.match.pattern, "to": self.to}


@dataclass
class VerifySpec:
    #: one reference, or (several inputs) a mapping input name -> reference
    inputs: str | dict | None = None
    #: one reference, a list (one per output, in ``outputs`` order) or a mapping name -> ref
    expected: str | list | dict | None = None
    input_layout: str | None = None
    output_layout: str | None = None
    atol: float = 1e-5
    rtol: float = 1e-4
    samples: int | None = None
    reference: str = "auto"  # auto | data | numpy | none

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class ModelSpec:
    input_shape: tuple | None = None
    input_dtype: str = "float32"
    layers: list[dict] | None = None
    keras_config: Path | None = None
    application: dict | None = None
    name: str | None = None
    #: graph specs: named inputs (name -> one sample's shape) and output item names
    inputs: dict | None = None
    outputs: list | None = None
    #: where the spec came from, for errors at build time: file and line of each item
    display: str = "<spec>"
    layer_lines: list = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "layers" if self.layers is not None else (
            "keras_config" if self.keras_config is not None else "application")

    def to_dict(self) -> dict:
        d: dict[str, Any] = {}
        if self.input_shape is not None:
            d["input_shape"] = list(self.input_shape)
        if self.input_dtype != "float32":
            d["input_dtype"] = self.input_dtype
        if self.inputs is not None:
            d["inputs"] = {k: list(v) for k, v in self.inputs.items()}
        if self.outputs is not None:
            d["outputs"] = list(self.outputs)
        if self.layers is not None:
            d["layers"] = self.layers
        if self.keras_config is not None:
            d["keras_config"] = str(self.keras_config)
        if self.application is not None:
            d["application"] = self.application
        return d


@dataclass
class Options:
    allow_missing: list[str] = field(default_factory=list)  # target globs left as Keras init
    allow_reuse: list[str] = field(default_factory=list)  # sources that may feed 2+ targets
    ignore: list[str] = field(default_factory=list)  # source globs that are not weights
    match_by_name: bool = True
    match_by_order: bool = True
    follow_links: bool = False


@dataclass
class Spec:
    source: Path
    convention: str = "auto"
    model: ModelSpec | None = None
    weights: dict[str, WeightRef] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    verify: VerifySpec | None = None
    options: Options = field(default_factory=Options)
    version: int = 1
    path: Path | None = None  # the spec file, if it came from one
    name: str | None = None
    #: choices the spec leaves undecided (``{undecided: [...]}``), each a dict with
    #: ``where``, ``layer``, ``key``, ``candidates``, ``why`` and ``line``; the spec holds
    #: the first candidate of each
    undecided: list[dict] = field(default_factory=list)

    def undecided_text(self) -> str:
        """One line naming every undecided choice (empty if there is none)."""
        return describe_undecided(self.undecided)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"version": self.version, "source": str(self.source),
                             "convention": self.convention}
        if self.model is not None:
            d["model"] = self.model.to_dict()
        if self.weights:
            d["weights"] = {k: v.to_dict() for k, v in self.weights.items()}
        if self.rules:
            d["rules"] = [r.to_dict() for r in self.rules]
        if self.verify is not None:
            d["verify"] = self.verify.to_dict()
        return d


# --------------------------------------------------------------------------------------
# loading


class _Lines:
    """Line numbers of keys, from the YAML node tree: path tuple -> 1-based line."""

    def __init__(self, node):
        self.map: dict[tuple, int] = {}
        self._walk(node, ())

    def _walk(self, node, path):
        if node is None:
            return
        self.map[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for k, v in node.value:
                key = k.value
                if key in seen:
                    raise _SpecErr(path + (key,), f"duplicate key {key!r} (also on line "
                                                  f"{seen[key]})", k.start_mark.line + 1)
                seen[key] = k.start_mark.line + 1
                self.map[path + (key,)] = k.start_mark.line + 1
                self._walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, path + (i,))

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.map:
                return self.map[path]
            path = path[:-1]
        return self.map.get(())


class _SpecErr(Exception):
    def __init__(self, path: tuple, msg: str, line: int | None = None):
        self.keypath = path
        self.msg = msg
        self.line = line


def _where(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def load_spec(path: str | os.PathLike | None = None, *, text: str | None = None,
              data: dict | None = None, base_dir: str | os.PathLike | None = None) -> Spec:
    """Read and validate a spec from a file (YAML or JSON), a string or a dict.

    Args:
        path: the spec file (its folder is the base of relative paths in it).
        text: the spec as a YAML/JSON string, instead of ``path``.
        data: the spec as a dict, instead of ``path`` or ``text`` (not modified).
        base_dir: the folder relative paths are resolved against when there is no
            ``path`` (default: the current folder).

    Returns:
        The validated :class:`Spec`; undecided choices (``{undecided: [...]}``) hold their
        first candidate and are listed in ``Spec.undecided``.

    Raises:
        InputError: the file cannot be read, is not YAML/JSON, or is not a valid spec (the
            message names the file, the line and the key).
        UnsafeInputError: the YAML uses a Python tag or other unsafe construct.
    """
    display = str(path) if path is not None else "<spec>"
    lines = None
    if data is None:
        data, lines = _read_yaml(path, text, display)
    undecided: list[dict] = []
    try:
        data = _take_undecided(data, (), undecided, data)
        spec = _build(data)
    except _SpecErr as e:
        line = e.line or (lines.line(e.keypath) if lines else None)
        where = f"{display}:{line}" if line else display
        raise InputError(f"{where}: {_where(e.keypath)}: {e.msg}") from None
    _place(spec, path, base_dir, lines, undecided, display)
    return spec


def _read_yaml(path, text: str | None, display: str):
    """(data, line numbers) of a spec's YAML/JSON text, read from ``path`` if no text."""
    if text is None:
        p = Path(path)
        from wtransplant.safety.paths import note_input

        note_input(p)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("spec file not found", path=display) from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read spec: {e}", path=display) from None
    try:
        from wtransplant.safety.bounds import load_yaml

        node, data = load_yaml(text, display)  # safe loader; depth and aliases bounded
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        where = f"{display}:{line}" if line else display
        raise UnsafeInputError(f"{where}: {e.problem} (only plain YAML is accepted: no "
                               f"Python tags)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{display}:{mark.line + 1}" if mark else display
        raise InputError(f"{where}: not valid YAML/JSON: "
                         f"{getattr(e, 'problem', None) or e}") from None
    try:
        lines = _Lines(node)
    except _SpecErr as e:
        raise InputError(f"{display}:{e.line}: {_where(e.keypath)}: {e.msg}") from None
    return data, lines


def _place(spec: Spec, path, base_dir, lines, undecided: list[dict], display: str) -> None:
    """Paths resolved against the spec's folder, line numbers on its entries, and the
    model's graph checked (errors name the line)."""
    if path is not None:
        spec.path = Path(path).resolve()
    elif base_dir is not None:
        spec.path = Path(base_dir).resolve() / "spec.yaml"
    if not spec.source.is_absolute():
        spec.source = (spec.base_dir / spec.source).resolve()
    if spec.model and spec.model.keras_config and not spec.model.keras_config.is_absolute():
        spec.model.keras_config = (spec.base_dir / spec.model.keras_config).resolve()
    if lines is not None:
        for k, w in spec.weights.items():
            w.line = lines.line(("weights", k))
        for i, r in enumerate(spec.rules):
            r.line = lines.line(("rules", i))
    for u in undecided:
        u["line"] = lines.line(u.pop("_path")) if lines is not None else None
        u.pop("_path", None)
    spec.undecided = undecided
    if spec.model is not None:
        spec.model.display = display
        if lines is not None and spec.model.layers is not None:
            spec.model.layer_lines = [lines.line(("model", "layers", i))
                                      for i in range(len(spec.model.layers))]
        if spec.model.layers is not None:
            from wtransplant.planning.graphspec import GraphSpecError, check_graph

            try:
                check_graph(spec.model)
            except GraphSpecError as e:
                line = lines.line(e.keypath) if lines else None
                where = f"{display}:{line}" if line else display
                raise InputError(f"{where}: {_where(e.keypath)}: {e.msg}") from None


# --------------------------------------------------------------------------------------
# undecided choices


UNDECIDED_KEYS = {"undecided", "why"}


def _is_undecided(v) -> bool:
    return isinstance(v, dict) and "undecided" in v


def _take_undecided(v, path: tuple, out: list, root):
    """A copy of ``v`` with every ``{undecided: [...]}`` replaced by its first candidate;
    each one found is appended to ``out``."""
    if _is_undecided(v):
        _keys(v, UNDECIDED_KEYS, path, "an undecided choice ({undecided: [candidates], "
                                       "why: ...})")
        cands = v["undecided"]
        if not isinstance(cands, list) or not cands:
            raise _SpecErr(path + ("undecided",), "expected a non-empty list of candidates")
        if any(_is_undecided(c) for c in cands):
            raise _SpecErr(path + ("undecided",), "a candidate cannot itself be undecided")
        why = v.get("why")
        if why is not None and not isinstance(why, str):
            raise _SpecErr(path + ("why",), f"expected a sentence, got {why!r}")
        layer, key = _undecided_owner(path, root)
        out.append({"where": _where(path), "layer": layer, "key": key,
                    "candidates": list(cands), "why": why, "line": None, "_path": path})
        return _take_undecided(cands[0], path, [], root)
    if isinstance(v, dict):
        return {k: _take_undecided(x, path + (k,), out, root) for k, x in v.items()}
    if isinstance(v, list):
        return [_take_undecided(x, path + (i,), out, root) for i, x in enumerate(v)]
    return v


def _undecided_owner(path: tuple, root) -> tuple[str | None, str | None]:
    """(layer name, argument or variable name) of an undecided value at ``path``."""
    key = next((p for p in reversed(path) if isinstance(p, str)), None)
    if len(path) >= 2 and path[0] == "weights" and isinstance(path[1], str):
        return path[1].split("/", 1)[0], path[1].split("/", 1)[-1]
    if len(path) >= 3 and path[:2] == ("model", "layers") and isinstance(path[2], int):
        try:
            lay = root["model"]["layers"][path[2]]
            name = lay.get("name") if isinstance(lay, dict) else None
        except (KeyError, IndexError, TypeError):
            name = None
        return (name if isinstance(name, str) else f"layers[{path[2]}]"), key
    return None, key


def flow_yaml(v, *, sort_keys: bool = False) -> str:
    """One-line YAML for a value (scalars get no document-end marker)."""
    s = yaml.safe_dump(v, default_flow_style=True, sort_keys=sort_keys, width=1 << 16).strip()
    if s.endswith("\n..."):
        s = s[:-4].strip()
    return s


def short_yaml(v) -> str:
    """A value as one line of YAML (keys sorted), cut at 60 characters: for messages."""
    s = " ".join(flow_yaml(v, sort_keys=True).split())
    return s if len(s) <= 60 else s[:59] + "…"


def describe_undecided(items: list[dict]) -> str:
    """``where (line N): a | b | c; ...`` for a list like ``Spec.undecided``."""
    parts = []
    for u in items:
        at = [x for x in ((u.get("layer") or "") and f"layer {u['layer']}",
                          u.get("line") and f"line {u['line']}") if x]
        line = f" ({', '.join(at)})" if at else ""
        parts.append(f"{u['where']}{line}: " + " | ".join(short_yaml(c) for c in u["candidates"]))
    return "; ".join(parts)


def _type(v, t, path, what):
    if not isinstance(v, t) or (t in (int, float) and isinstance(v, bool)):
        raise _SpecErr(path, f"expected {what}, got {type(v).__name__} {v!r}")
    return v


def _keys(d, allowed, path, what):
    if not isinstance(d, dict):
        raise _SpecErr(path, f"expected a mapping ({what}), got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise _SpecErr(path + (k,), f"unknown key {k!r} in {what} (expected one of: "
                                        f"{', '.join(sorted(allowed))})")


def _ints(v, path, what, allow_neg=False) -> tuple:
    if not isinstance(v, list | tuple) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise _SpecErr(path, f"expected {what} (a list of integers), got {v!r}")
    if not allow_neg and any(x < 0 for x in v):
        raise _SpecErr(path, f"expected {what} (non-negative integers), got {v!r}")
    return tuple(v)


def _build(d) -> Spec:
    if not isinstance(d, dict):
        raise _SpecErr((), "a spec is a mapping with at least 'source' and 'model'")
    _keys(d, TOP_KEYS, (), "the spec")
    version = d.get("version", 1)
    if version != 1:
        raise _SpecErr(("version",), f"unsupported spec version {version!r} (expected 1)")
    if "source" not in d:
        raise _SpecErr(("source",), "missing key 'source' (the weights file)")
    source = Path(_type(d["source"], str, ("source",), "a file path"))
    conv = d.get("convention", "auto")
    from wtransplant.planning.layouts.conventions import convention_names

    known = ("auto", *convention_names())  # the built-ins (CONVENTIONS) and any registered
    if not isinstance(conv, str) or conv not in known:
        raise _SpecErr(("convention",), f"unknown convention {conv!r} (expected one of: "
                                        f"{', '.join(known)})")
    spec = Spec(source=source, convention=conv, version=version, name=d.get("name"))
    if "model" in d and d["model"] is not None:
        spec.model = _model(d["model"])
    if d.get("weights") is not None:
        w = d["weights"]
        if not isinstance(w, dict):
            raise _SpecErr(("weights",), "expected a mapping 'layer/variable: source'")
        for k, v in w.items():
            if not isinstance(k, str) or "/" not in k:
                raise _SpecErr(("weights", k), f"target {k!r} must be '<layer name>/<variable "
                                               f"name>', e.g. 'conv1/kernel'")
            spec.weights[k] = weight_ref(v, ("weights", k))
    if d.get("rules") is not None:
        rules = _type(d["rules"], list, ("rules",), "a list of {match, to}")
        for i, r in enumerate(rules):
            _keys(r, RULE_KEYS, ("rules", i), "a rule")
            if "match" not in r or "to" not in r:
                raise _SpecErr(("rules", i), "a rule needs 'match' (a regex on source names) "
                                             "and 'to' (a target, \\1 back-references allowed)")
            try:
                rx = re.compile(_type(r["match"], str, ("rules", i, "match"), "a regex"))
            except re.error as e:
                raise _SpecErr(("rules", i, "match"), f"invalid regex: {e}") from None
            spec.rules.append(Rule(rx, _type(r["to"], str, ("rules", i, "to"), "a target")))
    if d.get("verify") is not None:
        spec.verify = _verify(d["verify"])
    if d.get("options") is not None:
        spec.options = _options(d["options"])
    return spec


def _model(m) -> ModelSpec:
    path = ("model",)
    _keys(m, MODEL_KEYS, path, "model")
    kinds = [k for k in ("layers", "keras_config", "application") if m.get(k) is not None]
    if len(kinds) != 1:
        raise _SpecErr(path, "give exactly one of 'layers', 'keras_config', 'application'"
                             + (f" (got {', '.join(kinds)})" if kinds else ""))
    ms = ModelSpec(name=m.get("name"))
    if m.get("input_shape") is not None:
        v = m["input_shape"]
        if not isinstance(v, list) or not all(
                (isinstance(x, int) and not isinstance(x, bool) and x > 0) or x is None
                for x in v):
            raise _SpecErr(path + ("input_shape",), f"expected one sample's shape, e.g. "
                                                    f"[16, 16, 3], got {v!r}")
        ms.input_shape = tuple(v)
    if m.get("input_dtype") is not None:
        ms.input_dtype = _type(m["input_dtype"], str, path + ("input_dtype",), "a dtype name")
    if "layers" in kinds:
        layers = _type(m["layers"], list, path + ("layers",), "a list of layers")
        if not layers:
            raise _SpecErr(path + ("layers",), "empty layer list")
        for i, lay in enumerate(layers):
            _layer_dict(lay, path + ("layers", i))
        if m.get("inputs") is not None:
            if ms.input_shape is not None:
                raise _SpecErr(path + ("inputs",), "give 'inputs' (named inputs) or "
                                                   "'input_shape' (one input), not both")
            ins = m["inputs"]
            if not isinstance(ins, dict) or not ins:
                raise _SpecErr(path + ("inputs",), "expected a mapping input name -> one "
                                                   "sample's shape, e.g. {image: [48, 48, 3]}")
            ms.inputs = {}
            for k, v in ins.items():
                if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", k):
                    raise _SpecErr(path + ("inputs", k), f"input name {k!r}: use letters, "
                                                         f"digits and _ . -")
                if not isinstance(v, list) or not v or not all(
                        (isinstance(x, int) and not isinstance(x, bool) and x > 0) or x is None
                        for x in v):
                    raise _SpecErr(path + ("inputs", k), f"expected one sample's shape, e.g. "
                                                         f"[16, 16, 3], got {v!r}")
                ms.inputs[k] = tuple(v)
        if m.get("outputs") is not None:
            outs = m["outputs"]
            outs = [outs] if isinstance(outs, str) else outs
            if not isinstance(outs, list) or not outs or not all(isinstance(x, str)
                                                                  for x in outs):
                raise _SpecErr(path + ("outputs",), "expected a list of item names")
            ms.outputs = list(outs)
        if ms.input_shape is None and ms.inputs is None:
            raise _SpecErr(path + ("input_shape",), "missing key 'input_shape' (one sample's "
                                                    "shape, channels last) or 'inputs' (named "
                                                    "inputs), needed with 'layers'")
        ms.layers = layers
    elif "keras_config" in kinds:
        ms.keras_config = Path(_type(m["keras_config"], str, path + ("keras_config",),
                                     "a path to a model JSON file"))
    else:
        app = m["application"]
        _keys(app, APP_KEYS, path + ("application",), "application")
        if "name" not in app:
            raise _SpecErr(path + ("application",), "missing 'name' (a keras.applications "
                                                    "constructor, e.g. MobileNetV2)")
        args = app.get("args") or {}
        _type(args, dict, path + ("application", "args"), "a mapping of arguments")
        ms.application = {"name": _type(app["name"], str, path + ("application", "name"),
                                        "a name"), "args": args}
    return ms


def _layer_dict(lay, path):
    if not isinstance(lay, dict) or "class" not in lay:
        raise _SpecErr(path, "a layer is a mapping with 'class' (a keras.layers class) and "
                             "its arguments")
    cls = lay["class"]
    if not isinstance(cls, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cls):
        raise _SpecErr(path + ("class",), f"expected a keras.layers class name, got {cls!r}")
    for k, v in lay.items():
        if isinstance(v, dict) and "class" in v:
            _layer_dict(v, path + (k,))


def weight_ref(v, path) -> WeightRef:
    if isinstance(v, str):
        return WeightRef([v])
    if isinstance(v, list):
        if not v or not all(isinstance(x, str) for x in v):
            raise _SpecErr(path, "expected a source name or a list of source names")
        return WeightRef(list(v))
    _keys(v, WEIGHT_KEYS, path, "a weights entry")
    if "from" not in v:
        raise _SpecErr(path, "missing key 'from' (the source tensor name)")
    src = v["from"]
    sources = [src] if isinstance(src, str) else src
    if not isinstance(sources, list) or not sources or not all(isinstance(x, str)
                                                               for x in sources):
        raise _SpecErr(path + ("from",), "expected a source name or a list of names")
    w = WeightRef(list(sources))
    if v.get("transpose") is not None:
        w.transpose = _ints(v["transpose"], path + ("transpose",), "axes")
        if sorted(w.transpose) != list(range(len(w.transpose))):
            raise _SpecErr(path + ("transpose",), f"{list(w.transpose)} is not a permutation "
                                                  f"of 0..{len(w.transpose) - 1}")
    if v.get("reshape") is not None:
        w.reshape = _ints(v["reshape"], path + ("reshape",), "a shape", allow_neg=True)
    if v.get("flatten") is not None:
        if v["flatten"] not in FLATTEN:
            raise _SpecErr(path + ("flatten",), f"expected one of {', '.join(FLATTEN)}")
        w.flatten = v["flatten"]
    if v.get("convert") is not None:
        w.convert = bool(_type(v["convert"], bool, path + ("convert",), "true or false"))
    if v.get("gates") is not None:
        g = v["gates"]
        if not isinstance(g, str) or gate_letters(g) is None:
            raise _SpecErr(path + ("gates",), "expected a gate order: GRU letters z, r, h "
                                              "(or n) as in 'rzn'; LSTM letters i, f, c (or "
                                              "g), o as in 'ifgo'")
        w.gates = g
    return w


def gate_letters(g: str) -> str | None:
    """A gate order in canonical letters (GRU z,r,h; LSTM i,f,c,o) or None if invalid."""
    n = g.lower().replace("n", "h").replace("g", "c")
    if sorted(n) in (sorted("zrh"), sorted("ifco")):
        return n
    return None


def _verify(v) -> VerifySpec:
    path = ("verify",)
    _keys(v, VERIFY_KEYS, path, "verify")
    vs = VerifySpec()
    for k in ("inputs", "expected"):
        if v.get(k) is not None:
            val = v[k]
            if isinstance(val, dict):
                if not val or not all(isinstance(a, str) and isinstance(b, str)
                                      for a, b in val.items()):
                    raise _SpecErr(path + (k,), "expected a mapping name -> dataset name or "
                                                ".npy path")
                val = dict(val)
            elif isinstance(val, list) and k == "expected":
                if not val or not all(isinstance(a, str) for a in val):
                    raise _SpecErr(path + (k,), "expected a list of dataset names or .npy "
                                                "paths (one per output)")
                val = list(val)
            else:
                val = _type(val, str, path + (k,), "a dataset name or a .npy path" + (
                    ", a list (one per output) or a mapping" if k == "expected" else
                    " or a mapping input name -> reference"))
            setattr(vs, k, val)
    for k in ("input_layout", "output_layout"):
        if v.get(k) is not None:
            val = _type(v[k], str, path + (k,), "a layout name").lower()
            if val not in LAYOUTS:
                raise _SpecErr(path + (k,), f"unknown layout {val!r} (expected one of: "
                                            f"{', '.join(LAYOUTS)})")
            setattr(vs, k, val)
    for k in ("atol", "rtol"):
        if v.get(k) is not None:
            val = v[k]
            if isinstance(val, str):
                try:
                    val = float(val)
                except ValueError:
                    pass
            setattr(vs, k, float(_type(val, (int, float), path + (k,), "a number")))
    if v.get("samples") is not None:
        vs.samples = _type(v["samples"], int, path + ("samples",), "an integer")
    if v.get("reference") is not None:
        if v["reference"] not in ("auto", "data", "numpy", "none"):
            raise _SpecErr(path + ("reference",), "expected auto, data, numpy or none")
        vs.reference = v["reference"]
    if (vs.inputs is None) != (vs.expected is None):
        raise _SpecErr(path, "give both 'inputs' and 'expected', or neither")
    return vs


def _options(o) -> Options:
    path = ("options",)
    _keys(o, OPTION_KEYS, path, "options")
    opts = Options()
    for k in ("allow_missing", "allow_reuse", "ignore"):
        if o.get(k) is not None:
            v = o[k]
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise _SpecErr(path + (k,), "expected a list of names or globs")
            setattr(opts, k, v)
    for k in ("match_by_name", "match_by_order", "follow_links"):
        if o.get(k) is not None:
            setattr(opts, k, _type(o[k], bool, path + (k,), "true or false"))
    return opts
