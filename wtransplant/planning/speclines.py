"""Layer 1 (yaml): where each ``model.layers`` item of a spec file starts, for error
messages that name the spec file, the line and the layer."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

MAX_SPEC_BYTES = 16 << 20


def layer_lines(path: str | os.PathLike | None) -> dict[int, int]:
    """``{index in model.layers: 1-based line}`` for a YAML/JSON spec file; empty when the
    file cannot be read or parsed (the caller then names the layer only)."""
    if path is None:
        return {}
    try:
        p = Path(path)
        if p.stat().st_size > MAX_SPEC_BYTES:
            return {}
        node = yaml.compose(p.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    model = _child(node, "model")
    layers = _child(model, "layers")
    if not isinstance(layers, yaml.SequenceNode):
        return {}
    return {i: item.start_mark.line + 1 for i, item in enumerate(layers.value)}


def _child(node, key: str):
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


_LAYER_REF = re.compile(r"^model\.layers\[(\d+)\]")


def locate_layer_error(message: str, spec) -> str:
    """Prefix an error about ``model.layers[i]`` with ``SPEC:LINE:`` and name the layer
    (``Dense 'fc1'``) if the message does not already."""
    m = _LAYER_REF.match(message)
    if m is None or spec is None or getattr(spec, "model", None) is None:
        return message
    i = int(m.group(1))
    layers = getattr(spec.model, "layers", None) or []
    item = layers[i] if i < len(layers) and isinstance(layers[i], dict) else {}
    name = item.get("name")
    cls = item.get("class")
    rest = message[m.end():]
    if name and repr(name) not in rest and f"'{name}'" not in rest:
        label = f" ({cls} {name!r})" if cls else f" ({name!r})"
        rest = re.sub(r"^ \(" + re.escape(str(cls)) + r"\)", "", rest) if cls else rest
        rest = label + rest
    where = ""
    spec_path = getattr(spec, "path", None)
    line = layer_lines(spec_path).get(i) if spec_path is not None else None
    if spec_path is not None:
        where = f"{spec_path}:{line}: " if line else f"{spec_path}: "
    return f"{where}model.layers[{i}]{rest}"
