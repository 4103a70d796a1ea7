"""Reference arrays (inputs, expected outputs) named in a spec or on the command line.

A reference is one of: a tensor or dataset of the source file (by logical name or HDF5
path; MATLAB/Octave arrays come in MATLAB's view), ``file.npy``, ``file.npz:key`` (or a
``.npz`` holding one array), ``file.h5:group/dataset``. No pickle is ever loaded.
Layouts: ``nchw``/``ncl``/``ncdhw`` data is moved to Keras' channels-last order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wtransplant.errors import InputError
from wtransplant.reading.loaded import load_source, writer_view
from wtransplant.reading.sources import open_source

#: layout -> axes that take it to channels-last
TO_CHANNELS_LAST = {"nchw": (0, 2, 3, 1), "ncl": (0, 2, 1), "ncdhw": (0, 2, 3, 4, 1)}


def split_ref(ref: str) -> tuple[str, str | None]:
    """'data.h5:io/x' -> ('data.h5', 'io/x'); a Windows drive letter is not a separator."""
    head, sep, tail = ref.rpartition(":")
    if sep and head and not (len(head) == 1 and head.isalpha()):
        return head, tail
    return ref, None


def load_array(ref: str, *, base_dir: str | os.PathLike | None = None, loaded=None,
               src=None, follow_links: bool = False) -> np.ndarray:
    """Resolve a reference (see module doc). ``loaded``/``src``: the spec's source file,
    searched first for bare names."""
    if loaded is not None and src is not None:
        t = loaded.tensor(ref)
        if t is not None:
            return writer_view(src, t)
    path, key = split_ref(ref)
    p = Path(path)
    if base_dir is not None and not p.is_absolute():
        p = Path(base_dir) / p
    if not p.exists():
        where = f" or in {loaded.tree.display}" if loaded is not None else ""
        raise InputError(f"reference {ref!r}: no such file{where}")
    suffix = p.suffix.lower()
    from wtransplant.safety.paths import note_input

    note_input(p)
    from wtransplant.safety.bounds import check_array_file

    check_array_file(p)  # declared sizes against the bytes there, before allocating
    try:
        if suffix == ".npy":
            if key:
                raise InputError(f"reference {ref!r}: a .npy file holds one array; drop "
                                 f"':{key}'")
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if key is None:
                    if len(z.files) != 1:
                        raise InputError(f"reference {ref!r}: the .npz holds {z.files}; name "
                                         f"one as {p.name}:KEY")
                    key = z.files[0]
                if key not in z.files:
                    raise InputError(f"reference {ref!r}: no array {key!r} in {p.name} "
                                     f"(it holds {', '.join(z.files)})")
                return z[key]
    except ValueError as e:  # pickled object arrays are refused by allow_pickle=False
        raise InputError(f"reference {ref!r}: cannot load: {e}") from None
    if key is None:
        raise InputError(f"reference {ref!r}: name the dataset as {p.name}:path/to/dataset")
    with open_source(p, follow_links=follow_links) as other:
        lo = load_source(other)
        t = lo.tensor(key)
        if t is not None:
            return lo.array(t)
        return other.read(key)


def to_channels_last(a: np.ndarray, layout: str | None, what: str) -> np.ndarray:
    if not layout or layout in ("none", "nhwc", "nlc", "ndhwc"):
        return a
    axes = TO_CHANNELS_LAST[layout]
    if a.ndim != len(axes):
        raise InputError(f"{what}: layout {layout} needs {len(axes)}-D data, got shape "
                         f"{a.shape}")
    return np.ascontiguousarray(np.transpose(a, axes))
