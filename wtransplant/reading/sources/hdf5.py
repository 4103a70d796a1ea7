"""HDF5 as a :class:`~wtransplant.reading.sources.base.Source`: plain HDF5, MATLAB v7.3,
GNU Octave, Keras 2/3 ``.h5``/``.weights.h5`` and the weights inside a Keras 3 ``.keras``
archive. A thin wrapper over :mod:`wtransplant.reading.h5io` (opening, safe reads) and
:mod:`wtransplant.reading.tree` (the metadata walk)."""

from __future__ import annotations

import os
from pathlib import Path

from wtransplant._lazy import lazy
from wtransplant.reading import h5io
from wtransplant.reading.sources.base import MAX_TENSOR_BYTES, Source, SourceInfo
from wtransplant.reading.tree import DatasetNode, FileTree, walk

np = lazy("numpy")


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
        if in_memory and not follow_links:  # a metadata walk (inspect): try it without h5py
            lean = LeanHDF5Source.try_open(path)
            if lean is not None:
                return lean
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


class LeanHDF5Source(HDF5Source):
    """A plain HDF5 file whose tree :mod:`~wtransplant.reading.h5lean` walked without
    h5py. Anything that reads values (``read``, ``stats``...) opens the file through h5py
    on first use, so it behaves as an :class:`HDF5Source` throughout."""

    def __init__(self, path: Path, tree: FileTree):
        self.path = path
        self.file_size = tree.file_size
        self.follow_links = False
        self._tree = tree
        self._opened = None

    @classmethod
    def try_open(cls, path: Path) -> LeanHDF5Source | None:
        from wtransplant.reading.h5parse import walk_parsed

        head = h5io.read_head(path)
        if head.startswith(b"PK"):  # a .keras archive: h5io opens its inner file
            return None
        size = path.stat().st_size
        # the classic format read directly; else the library without h5py
        fast = not os.environ.get("WTRANSPLANT_NO_FASTH5")
        tree = walk_parsed(str(path), str(path), file_size=size) if fast else None
        if tree is None:
            from wtransplant.reading.h5lean import walk_lean

            tree = walk_lean(str(path), str(path), file_size=size, head=head,
                             in_memory=size <= h5io.IN_MEMORY_LIMIT)
        return cls(path, tree) if tree is not None else None

    @property
    def opened(self) -> h5io.OpenedSource:
        if self._opened is None:
            self._opened = h5io.open_source(self.path)
        return self._opened

    @property
    def display(self) -> str:
        return str(self.path)

    @property
    def archive(self):
        return None

    @property
    def userblock(self) -> bytes:
        return self._tree.userblock

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None


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
