"""The graph a spec's ``model.layers`` describes: who feeds whom (layer 1: no Keras).

Each item reads the item before it unless it says ``inputs:`` (the name of an earlier or
later item, or of a model input, or a list of them for merge layers). The first item
without ``inputs:`` reads the model's only input. Unknown names, cycles, duplicate names
and outputs that name nothing are errors naming the item (``spec.py`` adds the file and
line). A list without any ``inputs:`` is a plain stack, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Keras merge layers: they take a list of inputs
MERGE_CLASSES = {"Add", "Concatenate", "Multiply", "Average", "Subtract", "Maximum",
                 "Minimum", "Dot"}


class GraphSpecError(Exception):
    def __init__(self, keypath: tuple, msg: str):
        super().__init__(msg)
        self.keypath = keypath
        self.msg = msg


@dataclass
class Node:
    index: int
    name: str | None  # the item's name (None: Keras chooses one)
    inputs: list[str]  # names of items or model inputs
    item: dict


def input_names(ms) -> list[str]:
    if ms.inputs is not None:
        return list(ms.inputs)
    return ["input"]


def input_shapes(ms) -> dict:
    if ms.inputs is not None:
        return dict(ms.inputs)
    return {"input": tuple(ms.input_shape)}


def item_name(i: int, item: dict) -> str:
    n = item.get("name")
    return n if isinstance(n, str) else f"item{i}"


def nodes(ms) -> list[Node]:
    """The items with their resolved input names, in the spec's order."""
    ins = input_names(ms)
    out: list[Node] = []
    prev: str | None = None
    for i, item in enumerate(ms.layers):
        path = ("model", "layers", i)
        spec_in = item.get("inputs")
        if spec_in is None:
            if prev is None:
                if len(ins) != 1:
                    raise GraphSpecError(path, f"the first item must say which input it reads "
                                               f"(inputs: one of {', '.join(ins)})")
                src = [ins[0]]
            else:
                src = [prev]
        elif isinstance(spec_in, str):
            src = [spec_in]
        elif isinstance(spec_in, list) and spec_in and all(isinstance(x, str)
                                                            for x in spec_in):
            src = list(spec_in)
        else:
            raise GraphSpecError(path + ("inputs",), f"expected an item or input name, or a "
                                                     f"list of them, got {spec_in!r}")
        out.append(Node(i, item.get("name"), src, item))
        prev = item_name(i, item)
    return out


def check_graph(ms) -> list[Node]:
    """Validate names, references, merges, outputs and cycles; return nodes in an order in
    which every item comes after its inputs."""
    ins = input_names(ms)
    ns = nodes(ms)
    seen: dict[str, int] = {}
    for n in ns:
        nm = n.item.get("name")
        if nm is not None and not isinstance(nm, str):
            raise GraphSpecError(("model", "layers", n.index, "name"),
                                 f"expected a name, got {nm!r}")
        if nm is None:
            continue
        if nm in seen:
            raise GraphSpecError(("model", "layers", n.index, "name"),
                                 f"duplicate name {nm!r} (also model.layers[{seen[nm]}])")
        if nm in ins:
            raise GraphSpecError(("model", "layers", n.index, "name"),
                                 f"name {nm!r} is also a model input's name")
        seen[nm] = n.index
    known = set(seen) | set(ins) | {item_name(n.index, n.item) for n in ns}
    for n in ns:
        for s in n.inputs:
            if s not in known:
                raise GraphSpecError(("model", "layers", n.index, "inputs"),
                                     f"item {item_name(n.index, n.item)!r} reads {s!r}, which is "
                                     f"neither an item nor a model input (inputs: "
                                     f"{', '.join(ins)})")
        cls = n.item.get("class")
        if cls in MERGE_CLASSES and len(n.inputs) < 2:
            raise GraphSpecError(("model", "layers", n.index),
                                 f"{cls} {item_name(n.index, n.item)!r} merges several inputs: "
                                 f"give `inputs: [a, b, ...]`")
        if cls not in MERGE_CLASSES and len(n.inputs) > 1:
            raise GraphSpecError(("model", "layers", n.index, "inputs"),
                                 f"{cls} {item_name(n.index, n.item)!r} takes one input, got "
                                 f"{len(n.inputs)} ({', '.join(n.inputs)})")
    for j, o in enumerate(ms.outputs or []):
        if o not in known:
            raise GraphSpecError(("model", "outputs", j),
                                 f"output {o!r} is not the name of an item or model input")
    # order: depth-first with cycle detection
    by_name = {item_name(n.index, n.item): n for n in ns}
    state: dict[str, int] = {}
    order: list[Node] = []

    def visit(name: str, trail: list[str]):
        if name in ins:
            return
        st = state.get(name)
        if st == 2:
            return
        n = by_name[name]
        if st == 1:
            cyc = trail[trail.index(name):] + [name]
            raise GraphSpecError(("model", "layers", n.index, "inputs"),
                                 f"cycle: {' -> '.join(reversed(cyc))}")
        state[name] = 1
        for s in n.inputs:
            visit(s, trail + [name])
        state[name] = 2
        order.append(n)

    for n in ns:
        visit(item_name(n.index, n.item), [])
    return order


def output_names(ms) -> list[str]:
    if ms.outputs:
        return list(ms.outputs)
    return [item_name(len(ms.layers) - 1, ms.layers[-1])]
