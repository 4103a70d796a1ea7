"""Nightly: the h5py-free walk (reading/h5lean.py) against the h5py walk on generated and
byte-mutated HDF5 files (tests/leanfuzz.py): the same tree or None, never a different tree,
a tree for a file h5py rejects, a crash, a hang or an HDF5 id left open.

`make fuzz` runs WT_LEANFUZZ_CASES generated and as many mutated files with a fresh seed
(printed on failure: ``python tests/leanfuzz.py --seed S`` reruns the campaign); run by
hand, the seed is fixed.
"""

from __future__ import annotations

import os
import random

import pytest
from leanfuzz import run

CASES = int(os.environ.get("WT_LEANFUZZ_CASES", "200"))
NIGHTLY = os.environ.get("WT_FUZZ_NIGHTLY") == "1"


@pytest.mark.nightly
def test_lean_walk_gives_h5py_walks_tree_or_none():
    seed = random.randrange(2, 1 << 30) if NIGHTLY else 1
    res = run(CASES, CASES, seed, log=lambda *_: None)
    stats = res["stats"]
    assert stats["cases"] == 2 * CASES
    assert stats["lean_tree"] >= CASES // 4, stats  # the fast path really ran
    assert not res["findings"], (f"seed {seed}", stats, res["findings"][:5])
