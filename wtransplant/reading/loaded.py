"""A walked, detected source: the typed object every later stage starts from.

:func:`load_source` takes an open :class:`~wtransplant.reading.sources.base.Source` (or an
h5io handle), walks it, detects the writer's format and lists the tensors under their
logical names. :meth:`LoadedSource.array` is the one place that reads a tensor in the
writer's own view (MATLAB/Octave arrays with their axes back in MATLAB's order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wtransplant._lazy import lazy
from wtransplant.errors import InputError
from wtransplant.reading.formats import Detection, FormatReader, SourceTensor, detect
from wtransplant.reading.sources.base import Source, as_source
from wtransplant.reading.tree import FileTree

np = lazy("numpy")


@dataclass
class LoadedSource:
    """A walked, detected source file: the typed object the later stages start from."""

    tree: FileTree
    detection: Detection
    reader: FormatReader
    tensors: list[SourceTensor]
    source: Source | None = field(default=None, repr=False)

    @property
    def format(self) -> str:
        return self.detection.format

    def tensor(self, name: str) -> SourceTensor | None:
        """A tensor by logical name, or by path (with or without the leading '/')."""
        by = self._by_name()
        if name in by:
            return by[name]
        p = "/" + name.lstrip("/")
        return next((t for t in self.tensors if t.path == p), None)

    def _by_name(self) -> dict:
        cache = getattr(self, "_by", None)
        if cache is None:
            cache = {t.name: t for t in self.tensors}
            self._by = cache
        return cache

    def array(self, t: SourceTensor | str, *, src: Source | None = None) -> np.ndarray:
        """One tensor in the writer's own view (MATLAB's for column-major writers), by
        :class:`SourceTensor` or logical name; ``src``: the open source, when this object
        was loaded from another handle."""
        if isinstance(t, str):
            found = self.tensor(t)
            if found is None:
                raise InputError(f"no tensor {t!r} in {self.tree.display}")
            t = found
        s = src if src is not None else self.source
        if s is None:
            raise InputError(f"{self.tree.display}: the source file is closed")
        return writer_view(s, t)


def writer_view(src, t: SourceTensor) -> np.ndarray:
    """Read tensor ``t`` from ``src`` (a Source or an h5io handle) in the writer's own view:
    as stored, or with the axes reversed for column-major writers (MATLAB, Octave)."""
    a = as_source(src).read(t.path)
    return np.transpose(a) if t.column_major else a


def load_source(src) -> LoadedSource:
    """Walk and detect an open source file.

    Args:
        src: a :class:`~wtransplant.reading.sources.base.Source` from
            ``wtransplant.reading.sources.open_source`` (any container), or an HDF5 handle
            from ``wtransplant.open_source``; it must stay open while tensors are read.

    Returns:
        A :class:`LoadedSource`: the tree, the detected format/convention/writer, the
        tensors under their logical names, and ``array(name)`` for values in the writer's
        view.

    Raises:
        InputError: the file's structure cannot be walked (exit 2).
    """
    s = as_source(src)
    tree = s.tree()
    info = s.info()
    if info.reader is not None:  # the container groups and names its tensors itself
        reader = info.reader
        det = reader.detect(tree)
    else:
        det, reader = detect(tree)
    if info.format is not None:  # the container names the format; the names, the convention
        det = Detection(info.format, det.convention, info.writer or None,
                        list(info.evidence) + [e for e in det.evidence
                                               if not e.startswith("no known writer")])
    return LoadedSource(tree, det, reader, reader.tensors(tree), s)
