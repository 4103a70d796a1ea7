"""HDF5 as a :class:`~wtransplant.reading.sources.base.Source`: plain HDF5, MATLAB v7.3,
GNU Octave, Keras 2/3 ``.h5``/``.weights.h5`` and the weights inside a Keras 3 ``.keras``
archive. A thin wrapper over :mod:`wtransplant.reading.h5io` (opening, safe reads) and
:mod:`wtransplant.reading.tree` (the metadata walk)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wtransplant.reading import h5io
from wtransplant.reading.sources.base import MAX_TENSOR_BYTES, Source, SourceInfo
from wtransplant.reading.tree import DatasetNode, FileTree, walk


class HDF5Source(Source):
    container = "hdf5"

    def __init__(self, opened: h5io.OpenedSource):
        self.opened = opened
        self.path = opened.path
        self.file_size = opened.file_size
        self.follow_links = opened.follow_links
        if opened.archive is not None:
            self.container = "keras-archive"

    @classmethod
    def wrap(cls, opened: h5io.OpenedSource) -> HDF5Source:
        """A Source over an h5io handle opened elsewhere (the caller closes it)."""
        return cls(opened)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return True  # the fallback: h5io.open_source says why a file is not HDF5

    @classmethod
    def open(cls, path: Path, *, follow_links: bool = False, in_memory: bool = False
             ) -> HDF5Source:
        return cls(h5io.open_source(path, follow_links=follow_links, in_memory=in_memory))

    # what callers holding an h5io handle used
    @property
    def display(self) -> str:
        return self.opened.display

    @property
    def h5(self):
        return self.opened.h5

    @property
    def archive(self):
        return self.opened.archive

    @property
    def userblock(self) -> bytes:
        return self.opened.userblock

    def _walk(self) -> FileTree:
        tree = walk(self.opened)
        if self.follow_links and tree.archive is None:
            tree.follow_warnings = follow_external(tree, self.path)
        return tree

    def info(self) -> SourceInfo:
        return SourceInfo()  # the format readers decide from the tree

    def outside_references(self) -> list[str]:
        return [] if self.follow_links else outside_references(self.tree())

    def read(self, path: str, *, limit: int = MAX_TENSOR_BYTES) -> np.ndarray:
        return h5io.read_dataset(self.opened, path, limit=limit)

    def read_as(self, path: str, dtype, *, hasher=None) -> np.ndarray:
        return h5io.read_dataset_as(self.opened, path, dtype, hasher=hasher)

    reads_rows = True

    def iter_rows(self, path: str, dtype, step: int, *, hasher=None):
        return h5io.iter_rows(self.opened, path, dtype, step, hasher=hasher)

    def stats(self, path: str):
        from wtransplant.reading.stats import tensor_stats

        return tensor_stats(self.opened, path)

    def stored_type(self, path: str) -> tuple:
        try:
            ds = h5io.resolve_dataset(self.opened, path)
            return ds.dtype, tuple(ds.shape)
        except Exception:
            return None, None

    def close(self) -> None:
        self.opened.close()


def outside_references(tree: FileTree) -> list[str]:
    """Everything in the file that points at data in another file."""
    out = [f"{ln.path} is an external link to {ln.target_file}:{ln.target}"
           for ln in tree.links.values() if ln.kind == "external"]
    for ds in tree.datasets.values():
        if ds.layout == "virtual" and any(s != "." for s in ds.sources):
            out.append(f"{ds.path} is a virtual dataset reading from "
                       f"{', '.join(s for s in ds.sources if s != '.')}")
        elif ds.layout == "external":
            out.append(f"{ds.path} keeps its data in external file(s) {', '.join(ds.sources)}")
    return out


def follow_external(tree: FileTree, path: Path) -> list[str]:
    """With --follow-links: describe what each external link points at (one level)."""
    out = []
    for ln in list(tree.links.values()):
        if ln.kind != "external":
            continue
        target = (path.parent / ln.target_file) if not os.path.isabs(ln.target_file) \
            else Path(ln.target_file)
        try:
            with h5io.open_source(target) as other:
                sub = walk(other)
        except Exception as e:  # reported, not fatal: the link is the problem
            out.append(f"{ln.path}: cannot follow external link: {e}")
            continue
        node = sub.datasets.get(ln.target) or sub.groups.get(ln.target)
        if isinstance(node, DatasetNode):
            copy = DatasetNode(**{k: getattr(node, k) for k in DatasetNode.__slots__})
            copy.path = ln.path
            copy.sources = [str(target)]
            tree.datasets[ln.path] = copy
        elif node is None:
            out.append(f"{ln.path}: external target {ln.target} not found in {target}")
    return out
