"""Graph structure a draft can see in a list of recognised source units (layer 1).

* A PReLU unit numbered like a layer (``prelu3`` next to ``conv3``, ``prelu4`` next to
  ``dense4``) follows that layer (HDF5 sorts names alphabetically, which puts every
  ``prelu*`` after every ``dense*``).
* Parallel heads: a layer whose input width cannot follow the layer before it, but equals
  that layer's own input width, reads the same tensor as that layer (MTCNN's
  ``dense5_1``/``dense5_2``, ``conv4_1``/``conv4_2``); every head is then an output.
"""

from __future__ import annotations

import re

PASS_WIDTH = ("prelu", "batchnorm", "layernorm")


def _number(unit: str) -> str | None:
    m = re.search(r"(\d+)(?!.*\d)", unit.split("#", 1)[0]) if unit else None
    if m is None:
        return None
    head = re.match(r"[A-Za-z_]*?(\d+)", unit)
    return head.group(1) if head else m.group(1)


def place_prelus(known: list) -> list:
    """Move each numbered PReLU unit right after the last layer with the same number."""
    prelus = [lh for lh in known if lh.proposal.kind == "prelu" and _number(lh.unit)]
    rest = [lh for lh in known if lh not in prelus]
    for pr in prelus:
        n = _number(pr.unit)
        at = None
        for i, lh in enumerate(rest):
            if lh.proposal.kind != "prelu" and _number(lh.unit) == n:
                at = i
        if at is None:
            rest.append(pr)
        else:
            # after that layer and any normalisation right behind it
            j = at + 1
            while j < len(rest) and rest[j].proposal.kind in ("batchnorm", "layernorm"):
                j += 1
            rest.insert(j, pr)
    return rest


def heads(known: list) -> tuple[dict[int, int], list[int]]:
    """({position: position of the item it reads}, output positions) for parallel heads;
    ({}, []) for a plain chain."""
    reads: dict[int, int] = {}
    last = None  # position of the last width-changing layer
    for j, lh in enumerate(known):
        p = lh.proposal
        if p.kind in PASS_WIDTH:
            continue
        if last is not None:
            q = known[last].proposal
            if p.in_features and q.out_features and p.in_features != q.out_features \
                    and q.in_features == p.in_features:
                # parallel to `last`: read what `last` reads (the item before it, or the
                # item `last` itself was told to read)
                reads[j] = reads.get(last, last - 1)
        last = j
    if not reads:
        return {}, []
    read_from = set(reads.values())
    outs = []
    for j in range(len(known)):
        consumed = (j + 1 < len(known) and (j + 1) not in reads) or j in read_from
        if not consumed:
            outs.append(j)
    # a head followed by pass-width items ends at the last of them; keep order
    return reads, outs
