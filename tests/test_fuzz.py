"""Fuzzing inspect, spec and rebuild with byte mutations of the fixture files (Hypothesis).

`make test` runs a few hundred derandomised cases; `make fuzz` runs thousands
(WT_FUZZ_CASES). A case passes when every target succeeds or raises a WTError (one line,
exit 2 in the CLI), within its time limit and memory ceiling, leaving the read-only input
byte for byte unchanged; see tests/fuzzing.py.
"""

from __future__ import annotations

import os

import pytest
from fuzzing import FIX, SEEDS, Case, Worker, _signature_end, findings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASES = int(os.environ.get("WT_FUZZ_CASES", "300"))
REBUILD_CASES = int(os.environ.get("WT_FUZZ_REBUILD_CASES", "40"))
NIGHTLY = os.environ.get("WT_FUZZ_NIGHTLY") == "1"

_SIZES = {s: (FIX / s).stat().st_size for s in SEEDS}
ALL_SEEDS = tuple(sorted(SEEDS))


@st.composite
def cases(draw, seeds=ALL_SEEDS):
    seed = draw(st.sampled_from(seeds))
    size, start = _SIZES[seed], _signature_end(seed)
    head = st.integers(start, max(start, min(size, 4096) - 1))
    anywhere = st.integers(start, max(start, size - 1))
    pos = st.one_of(head, head, anywhere, st.integers(0, start - 1))
    mut = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("set"), pos, st.lists(st.integers(0, 255), min_size=1, max_size=16)),
        st.tuples(st.just("zero"), pos, st.integers(1, 512)),
        st.tuples(st.just("dup"), pos, st.integers(1, 512)),
        st.tuples(st.just("insert"), pos, st.lists(st.integers(0, 255), min_size=1,
                                                   max_size=16)),
        st.tuples(st.just("truncate"), st.integers(max(start, size // 4), max(start, size - 1)),
                  st.just(0)),
    )
    return Case(seed, [list(m) for m in draw(st.lists(mut, min_size=1, max_size=6))])


@pytest.fixture(scope="module")
def worker():
    w = Worker(["inspect", "spec"])
    yield w
    w.close()


@pytest.fixture(scope="module")
def rebuild_worker():
    w = Worker(["rebuild"])
    yield w
    w.close()


def _check(res: dict):
    f = findings(res)
    assert not f, f"{f}\n{res}"


@pytest.mark.slow
@settings(max_examples=CASES, deadline=None, derandomize=not NIGHTLY, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=cases())
def test_fuzz_inspect_and_spec(worker, case):
    _check(worker.run(case))


@pytest.mark.slow
@settings(max_examples=REBUILD_CASES, deadline=None, derandomize=not NIGHTLY, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=cases(seeds=tuple(sorted(s for s, spec in SEEDS.items()
                                     if spec or s.startswith(("keras2/k2_rnn", "keras3/"))))))
def test_fuzz_rebuild(rebuild_worker, case):
    _check(rebuild_worker.run(case))
