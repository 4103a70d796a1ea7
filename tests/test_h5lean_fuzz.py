"""Nightly: the h5py-free walks (reading/h5lean.py through the library, reading/h5parse.py
in pure Python) against the h5py walk on generated and byte-mutated HDF5 files
(tests/leanfuzz.py): the same tree or None, never a different tree, a tree for a file h5py
rejects, a crash, a hang or an HDF5 id left open.

`make fuzz` runs WT_LEANFUZZ_CASES generated and as many mutated files with a fresh seed
(printed on failure: ``python tests/leanfuzz.py --seed S --subject lean|parse`` reruns
the campaign); run by hand, the seed is fixed. The parse subject's cases are mostly
classic-format files that stress h5parse, and mutations inside their metadata
structures; they cost milliseconds each, so it runs WT_PARSEFUZZ_CASES of each kind.
"""

from __future__ import annotations

import os
import random

import pytest
from leanfuzz import run

CASES = int(os.environ.get("WT_LEANFUZZ_CASES", "200"))
PARSE_CASES = int(os.environ.get("WT_PARSEFUZZ_CASES", "300"))
NIGHTLY = os.environ.get("WT_FUZZ_NIGHTLY") == "1"


def _seed() -> int:
    return random.randrange(2, 1 << 30) if NIGHTLY else 1


@pytest.mark.nightly
def test_lean_walk_gives_h5py_walks_tree_or_none():
    seed = _seed()
    res = run(CASES, CASES, seed, log=lambda *_: None, subjects=("lean",))
    stats = res["stats"]
    assert stats["cases"] == 2 * CASES
    assert stats["lean_tree"] >= CASES // 4, stats  # the fast path really ran
    assert not res["findings"], (f"seed {seed}", stats, res["findings"][:5])


@pytest.mark.nightly
def test_parsed_walk_gives_h5py_walks_tree_or_none():
    seed = _seed()
    res = run(PARSE_CASES, PARSE_CASES, seed, log=lambda *_: None, subjects=("parse",))
    stats = res["stats"]
    assert stats["cases"] == 2 * PARSE_CASES
    assert stats["parse_tree"] >= PARSE_CASES // 4, stats  # it read files itself
    assert not res["findings"], (f"seed {seed}", stats, res["findings"][:5])
