"""``wtransplant inspect``: what is in a file, what wrote it, what architecture it implies.

:func:`inspect_file` returns an :class:`InspectReport` (JSON-serialisable through
``to_dict``). Only h5py and numpy are imported: no TensorFlow, no Keras.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

from wtransplant.reading.formats import Detection, SourceTensor
from wtransplant.reading.h5io import BOMB_FLOOR_BYTES, MAX_EXPANSION, fmt_bytes
from wtransplant.reading.hints import Hints, build_hints
from wtransplant.reading.loaded import LoadedSource, load_source
from wtransplant.reading.sources import open_source
from wtransplant.reading.sources.hdf5 import outside_references
from wtransplant.reading.stats import TensorStats
from wtransplant.reading.tree import DatasetNode, FileTree, gc_paused

__all__ = ["InspectReport", "LoadedSource", "inspect_file", "load_source",
           "outside_references", "match_filter", "safety_warnings"]


@dataclass
class InspectReport:
    file: str
    file_size: int
    detection: Detection
    tree: FileTree
    tensors: list[SourceTensor]
    hints: Hints
    stats: dict[str, TensorStats] | None = None
    warnings: list[str] = field(default_factory=list)
    #: references to data outside the file (external links, virtual datasets, external
    #: storage) that were not followed: the CLI reports them and exits 2
    outside: list[str] = field(default_factory=list)
    #: the architecture the file states itself (a Keras 2 full model's model_config)
    architecture: dict | None = None
    #: the container the tensors came from: hdf5, keras-archive, safetensors, npz, npy...
    container: str = "hdf5"

    @property
    def format(self) -> str:
        return self.detection.format

    def tensor_rows(self) -> list[dict]:
        """Every numeric dataset: path, shape as written, dtype (+ logical name, MATLAB
        view)."""
        by_path = {t.path: t for t in self.tensors}
        rows = []
        for ds in self.tree.datasets.values():
            if not ds.numeric or ds.alias_of:
                continue
            row = {"path": ds.path, "shape": list(ds.shape), "dtype": ds.dtype}
            t = by_path.get(ds.path)
            if t is not None:
                row["name"] = t.name
                if t.column_major:
                    row["matlab_shape"] = list(t.shape)
            if self.stats is not None and ds.path in self.stats:
                row["stats"] = self.stats[ds.path].to_dict()
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        d = {
            "file": self.file,
            "file_size": self.file_size,
            "format": self.detection.format,
            "writer": self.detection.writer,
            "convention": self.detection.convention,
            "evidence": self.detection.evidence,
            "tensors": self.tensor_rows(),
            "hints": self.hints.to_dict(),
            "warnings": list(self.warnings),
            "outside_references": list(self.outside),
            "tree": self.tree.to_dict(),
            "architecture": self.architecture,
            "container": self.container,
        }
        if self.tree.archive is not None:
            d["archive"] = {"members": self.tree.archive.members,
                            "metadata": self.tree.archive.metadata}
        return d


def inspect_file(path: str | os.PathLike, *, stats: bool = False, follow_links: bool = False,
                 stats_filter: str | None = None) -> InspectReport:
    """Walk a file (metadata only; values are read only for ``stats``) and describe it.
    Never imports TensorFlow or Keras.

    Args:
        path: an HDF5 file, MATLAB v7.3 file, ``.keras`` archive, ``.safetensors``,
            ``.npz`` or ``.npy`` (or any container in ``reading.sources.REGISTRY``).
        stats: also compute min/max/mean/std and NaN/Inf counts per tensor (chunk by
            chunk).
        follow_links: follow external links and virtual datasets into other files.
        stats_filter: a glob: compute stats only for the tensors whose path or name
            matches.

    Returns:
        An :class:`InspectReport`: ``format``, ``writer``, ``evidence``, ``tensors``, the
        tree and the implied architecture (``hints``); ``to_dict()`` is JSON-ready.

    Raises:
        InputError: the file is missing, unreadable or not one of those formats (exit 2).
        UnsafeInputError: a dataset declares far more bytes than the file holds (exit 2).
    """
    # metadata-heavy walks are faster from memory; big weight files are walked from disk
    with open_source(path, follow_links=follow_links, in_memory=not stats) as src, \
            gc_paused():
        loaded = load_source(src)
        tree = loaded.tree
        warnings = safety_warnings(tree, follow_links)
        warnings += getattr(tree, "follow_warnings", [])
        hints = build_hints(loaded.tensors, loaded.detection, loaded.reader)
        st = None
        if stats:
            st = {}
            for ds in tree.datasets.values():
                if not ds.numeric or ds.alias_of:
                    continue
                if stats_filter and not match_filter(ds.path, stats_filter):
                    continue
                st[ds.path] = src.stats(ds.path)
        outside = src.outside_references()
    arch = None
    if loaded.format == "keras-legacy-model":
        from wtransplant.reading.kerasconfig import summarize

        arch = summarize(tree.root_attrs.get("model_config"), loaded.tensors)
        if arch is not None:
            # the file states its architecture: no guessing from shapes (chains, flatten
            # orders) next to it
            hints.chain = None
            hints.notes = []
    return InspectReport(str(path), tree.file_size, loaded.detection, tree, loaded.tensors,
                         hints, st, warnings, outside, arch, src.container)


def match_filter(path: str, pattern: str) -> bool:
    """A glob against the full path ('/features/*') or just the name ('*.weight')."""
    return (fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path.lstrip("/"), pattern)
            or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern))


def safety_warnings(tree: FileTree, follow_links: bool) -> list[str]:
    out = []
    how = "followed (--follow-links)" if follow_links else "not followed"
    for ln in tree.links.values():
        if ln.kind == "external":
            out.append(f"{ln.path} is an external link to {ln.target_file}:{ln.target}; {how}")
        elif ln.kind == "soft" and ln.resolves_to is None:
            out.append(f"{ln.path} is a dangling soft link to {ln.target}")
    for ds in tree.datasets.values():
        if ds.layout == "virtual" and any(s != "." for s in ds.sources):
            out.append(f"{ds.path} is a virtual dataset reading from "
                       f"{', '.join(s for s in ds.sources if s != '.')}; {how}")
        elif ds.layout == "external":
            out.append(f"{ds.path} keeps its data in external file(s) "
                       f"{', '.join(ds.sources)}; {how}")
        elif _is_bomb(ds):
            out.append(f"{ds.path} declares shape {ds.shape} ({fmt_bytes(ds.nbytes)}) but "
                       f"stores {fmt_bytes(ds.storage)}: refused on read")
    return out


def _is_bomb(ds: DatasetNode) -> bool:
    return ds.nbytes > BOMB_FLOOR_BYTES and ds.nbytes > MAX_EXPANSION * ds.storage
