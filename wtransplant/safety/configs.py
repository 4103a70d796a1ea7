"""Model configs and spec layers are data.

Keras' deserialiser imports the ``module`` a config names, looks up ``class_name`` (or a
function) there, and passes every argument to the class. Some arguments name files
(``StringLookup(vocabulary="/etc/passwd")`` reads that file and the saved model embeds it),
some classes load programs (``TFSMLayer``) or are code (``Lambda``). Safe mode stops only
the last. :func:`check_config` walks a whole config (iteratively, depth-bounded) and allows
only:

- classes in Keras' own ``layers``, ``initializers``, ``regularizers``, ``constraints``,
  models (``Sequential``/``Functional``/``Model``), dtype policies and the serialiser's
  value markers (``__tuple__``, ``__numpy__``...), minus :data:`FORBIDDEN_CLASSES`;
- a ``module`` among Keras' own public modules or ``keras.src`` layer/initializer/...
  modules (never one with ``lambda``, ``tfsm``, ``jax``, ``torch`` in it);
- ``registered_name`` null or naming an allowed class (a ``package>Name`` is custom code);
- functions (``class_name: function``) only when they are Keras activations by name;
- no argument naming a file, module or function (:data:`FORBIDDEN_KEYS`), and lookup
  vocabularies only inline (a list, never a string path).

No Keras import: the class lists come from Keras lazily, on first use.
"""

from __future__ import annotations

import functools
import json
import re

from wtransplant.errors import InputError, UnsafeInputError

#: classes whose config is code, or that load code, programs or files
FORBIDDEN_CLASSES = frozenset({
    "Lambda", "TFOpLambda", "SlicingOpLambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer",
    "FlaxLayer", "__lambda__", "Layer", "InputSpec"})
#: keys that name code or files wherever they appear
FORBIDDEN_KEYS = frozenset({
    "function", "function_type", "fn", "code", "closure", "defaults", "filepath",
    "file_path", "call_endpoint", "call_training_endpoint", "module_name", "custom_objects",
    "output_shape_type", "shared_object_id_path"})
#: arguments that must be inline data: a string here would be a path Keras opens
INLINE_ONLY = frozenset({"vocabulary", "idf_weights", "stop_words", "mean", "variance",
                         "bin_boundaries"})
#: serialiser markers for plain values
VALUE_MARKERS = frozenset({"__tuple__", "__numpy__", "__tensor__", "__keras_tensor__",
                           "__bytes__", "__ellipsis__", "__slice__", "__typespec__"})
MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
#: wtransplant's own serialisable layers (wtransplant/layers_custom.py): data, not code;
#: allowed only with their own module and registered name
OWN_CLASSES = {"TorchPooling": "wtransplant.layers_custom"}
POLICY_CLASSES = frozenset({"DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy",
                            "QuantizedFloat8DTypePolicy", "Policy"})
_MODULE_OK = re.compile(
    r"^keras(\.src)?(\.(layers|initializers|regularizers|constraints|activations|models|"
    r"engine|dtype_policies|mixed_precision|backend|optimizers|losses|metrics)"
    r"(\.[A-Za-z0-9_]+)*)?$")
_MODULE_BAD = re.compile(r"lambda|tfsm|jax|torch|flax|(^|\.)(saving|export|utils|legacy|ops)"
                         r"(\.|$)", re.I)
_ACTIVATION_MODULES = frozenset({"keras.activations", "keras.src.activations",
                                 "keras.src.activations.activations", "builtins"})
#: deepest nesting accepted in a config or spec (real Keras configs stay under ~30)
MAX_DEPTH = 100
#: largest config accepted, in bytes of JSON
MAX_CONFIG_BYTES = 64 << 20


@functools.lru_cache(maxsize=1)
def allowed_classes() -> frozenset:
    import keras

    names = set()
    for mod in (keras.layers, keras.initializers, keras.regularizers, keras.constraints,
                keras.optimizers, keras.optimizers.schedules, keras.losses, keras.metrics):
        for n, v in vars(mod).items():
            if isinstance(v, type) and not n.startswith("_"):
                names.add(n)
    return frozenset((names | MODEL_CLASSES | POLICY_CLASSES | VALUE_MARKERS)
                     - FORBIDDEN_CLASSES)


@functools.lru_cache(maxsize=1)
def activation_names() -> frozenset:
    import keras

    return frozenset(n for n, v in vars(keras.activations).items()
                     if callable(v) and not n.startswith("_") and not isinstance(v, type)
                     and n not in ("get", "serialize", "deserialize"))


def _refuse(where: str, path: str, msg: str):
    at = f"{where}: {path}" if path else where
    raise UnsafeInputError(f"{at}: {msg}; configs are data, wtransplant never loads files, "
                           f"modules or functions named in them")


def _name_of(d: dict) -> str:
    cfg = d.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
        return f" {cfg['name']!r}"
    return ""


def check_config(config, where: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise UnsafeInputError (exit 2) unless every object in ``config`` is allowed (see
    the module docstring). Iterative; nesting deeper than ``max_depth`` is refused."""
    allowed = allowed_classes()
    stack = [(config, "", 0)]
    while stack:
        c, path, depth = stack.pop()
        if depth > max_depth:
            raise InputError(f"{where}: nested more than {max_depth} levels deep at {path}; "
                             f"refused")
        if isinstance(c, dict):
            _check_object(c, where, path, allowed)
            for k, v in c.items():
                if isinstance(v, dict | list):
                    stack.append((v, f"{path}.{k}" if path else str(k), depth + 1))
        elif isinstance(c, list):
            for i, v in enumerate(c):
                if isinstance(v, dict | list):
                    stack.append((v, f"{path}[{i}]", depth + 1))


def _check_object(c: dict, where: str, path: str, allowed: frozenset) -> None:
    cls = c.get("class_name")
    if isinstance(cls, str) and cls in OWN_CLASSES and c.get("module") in (
            None, OWN_CLASSES[cls]) and c.get("registered_name") in (None, f"wtransplant>{cls}"):
        c = {k: v for k, v in c.items() if k not in ("module", "registered_name")}
        allowed = allowed | {cls}
    for k, v in c.items():
        if not isinstance(k, str):
            continue
        if k in FORBIDDEN_KEYS and v not in (None, [], {}):
            _refuse(where, path, f"argument {k!r} names code or a file")
        if k in INLINE_ONLY and isinstance(v, str):
            _refuse(where, path, f"{k}={v[:80]!r} is a string (a path Keras would read); "
                                 f"only an inline list is accepted")
    mod = c.get("module")
    if "module" in c and mod is not None:
        if not isinstance(mod, str) or not _MODULE_OK.match(mod) or _MODULE_BAD.search(mod):
            if not (cls == "function" and mod in _ACTIVATION_MODULES):
                _refuse(where, path, f"module {str(mod)[:80]!r} is not one of Keras' layer, "
                                     f"initializer or model modules")
    reg = c.get("registered_name")
    if "registered_name" in c and reg is not None:
        if not isinstance(reg, str) or ">" in reg or (reg not in allowed and reg != cls
                                                      and reg not in activation_names()):
            _refuse(where, path, f"registered_name {str(reg)[:80]!r} names a custom object")
    if "class_name" not in c:
        return
    if not isinstance(cls, str):
        _refuse(where, path, f"class_name {str(cls)[:80]!r} is not a name")
    if cls == "function":
        fn = c.get("config")
        if (mod is not None and mod not in _ACTIVATION_MODULES) or not isinstance(fn, str) \
                or fn not in activation_names():
            _refuse(where, path, f"a function ({str(fn)[:60]!r} from module "
                                 f"{str(mod)[:80]!r}) that is not a Keras activation")
        return
    if cls in FORBIDDEN_CLASSES:
        _refuse(where, path, f"layer{_name_of(c)} is a {cls}, which runs Python code or loads "
                             f"a program")
    if cls not in allowed:
        _refuse(where, path, f"class {cls[:80]!r}{_name_of(c)} is not a standard Keras layer, "
                             f"initializer, regularizer or constraint")


def check_layer_args(cls_name: str, args: dict, where: str) -> None:
    """A spec's ``{class: X, ...}`` layer: X allowed, arguments data (nested dicts in Keras'
    serialised form are checked as configs)."""
    if cls_name in FORBIDDEN_CLASSES or cls_name not in allowed_classes():
        if cls_name in FORBIDDEN_CLASSES:
            raise UnsafeInputError(f"{where}: {cls_name} layers run Python code or load "
                                   f"programs and are not supported; express the computation "
                                   f"with standard layers")
        return  # not a Keras class at all: the builder's own message says so
    check_config(args, where)


def loads(text, where: str, *, max_bytes: int = MAX_CONFIG_BYTES):
    """``json.loads`` that never raises RecursionError or MemoryError: too deep or too
    large input is an InputError (exit 2)."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "strict")
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    if len(text) > max_bytes:
        raise InputError(f"{where}: JSON of {len(text)} bytes is implausibly large; refused")
    if _max_nesting(text) > MAX_DEPTH:
        raise InputError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep; refused")
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply; refused") from None


def _max_nesting(text: str) -> int:
    """Bracket depth outside strings (an upper bound on the parsed nesting)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    depth = best = 0
    for m in _BRACKETS.finditer(_STRINGS.sub("", text)):
        if m.group() in "[{":
            depth += 1
            best = max(best, depth)
        else:
            depth -= 1
    return best


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def safe_mode_scope():
    """Keras' safe-mode scope (no Lambda deserialisation) around a deserialisation that
    does not take ``safe_mode=`` itself (``model_from_json``, the legacy reader)."""
    import contextlib

    try:
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover - keras >= 3.15 has it
        return contextlib.nullcontext()
    return SafeModeScope(True)
