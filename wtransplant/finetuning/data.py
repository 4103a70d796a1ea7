"""Layer 1 (h5py + numpy only): training data for ``wtransplant finetune``.

Sources
    * HDF5: two datasets with the same first dimension (``train_set_x``/``train_set_y``);
      streamed, whole contiguous batches at a time, never loaded whole. The file is opened
      read-only through :func:`wtransplant.reading.h5io.open_source` (no external links, virtual
      datasets or shape bombs), lazily and once per process: a handle never crosses a fork.
    * ``.npz`` (``allow_pickle=False``) and CSV (feature columns + a target column): read
      into memory.
    * an image folder with one subfolder per class: images decoded batch by batch (Pillow).

Batches
    :class:`BatchReader` cuts the sample range into contiguous blocks starting at a random
    offset each epoch, shuffles the order of the blocks and the samples inside each block,
    and reads each block with one or two slice reads (about 25x faster than sample-by-sample
    reads from HDF5). The order is a pure function of ``(seed, epoch, batch index)``, so a
    resumed run sees the same batches as an uninterrupted one, whatever prefetches.

Names
    Without ``--x``/``--y`` the training pair is found by name (``train_set_x``/
    ``train_set_y``, ``x_train``/``y_train``, ``x``/``y``, ``images``/``labels``...) and the
    validation pair is the matching ``val``/``test`` pair.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wtransplant.errors import InputError
from wtransplant.reading.h5io import open_source, resolve_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: seed of the fixed shuffle of an image folder's file list (so that --val-split takes a
#: mix of classes, the same whatever --seed says)
FOLDER_ORDER_SEED = 20240


# --------------------------------------------------------------------------------------
# arrays that can be read in contiguous slices


class ArraySource:
    """A named array of samples (first axis) read in contiguous slices."""

    display: str = "?"
    shape: tuple = ()
    dtype: np.dtype = np.dtype("float32")
    #: index of sample 0 in the file (a --val-split tail starts inside its base array)
    offset: int = 0

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.shape[1:])

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def take(self, segments) -> np.ndarray:
        parts = [self.read(a, b) for a, b in segments]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        pass


class MemoryArray(ArraySource):
    def __init__(self, array: np.ndarray, display: str):
        if array.ndim == 0:
            raise InputError(f"{display}: a scalar, not an array of samples")
        self.array = array
        self.display = display
        self.shape = tuple(array.shape)
        self.dtype = array.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


class H5Array(ArraySource):
    """A dataset of an HDF5 file, opened lazily, once per process (never shared across a
    fork: a child process opens its own handle)."""

    def __init__(self, path: str | os.PathLike, name: str):
        self.path = Path(path)
        self.name = name.strip("/")
        self.display = f"{self.path}:{self.name}"
        self._src = None
        self._ds = None
        self._pid = None
        ds = self._dataset()
        if ds.ndim == 0:
            raise InputError(f"{self.display}: a scalar dataset, not an array of samples")
        if ds.dtype.kind not in "biuf":
            raise InputError(f"{self.display}: dtype {ds.dtype} is not numeric")
        self.shape = tuple(int(d) for d in ds.shape)
        self.dtype = ds.dtype

    def _dataset(self):
        if self._ds is None or self._pid != os.getpid():
            self._src = open_source(self.path)
            self._ds = resolve_dataset(self._src, self.name)
            self._pid = os.getpid()
        return self._ds

    def read(self, start: int, stop: int) -> np.ndarray:
        try:
            return self._dataset()[start:stop]
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"{self.display}: cannot read samples {start}..{stop}: "
                             f"{str(e).split('(')[0].strip()}") from None

    def close(self) -> None:
        if self._src is not None and self._pid == os.getpid():
            self._src.close()
        self._src = self._ds = self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_src=None, _ds=None, _pid=None)
        return state


class ImageFiles(ArraySource):
    """Images decoded on demand, resized to ``size`` (h, w) with ``channels`` 1 or 3;
    values 0..255 as float32."""

    def __init__(self, files: list[Path], size: tuple[int, int], channels: int, display: str):
        if channels not in (1, 3):
            raise InputError(f"{display}: the model takes {channels} channels; image folders "
                             f"give 1 (grey) or 3 (RGB)")
        self.files = files
        self.size = (int(size[0]), int(size[1]))
        self.channels = channels
        self.display = display
        self.shape = (len(files), *self.size, channels)
        self.dtype = np.dtype("float32")

    def read(self, start: int, stop: int) -> np.ndarray:
        from PIL import Image

        out = np.empty((max(0, stop - start), *self.size, self.channels), np.float32)
        mode = "L" if self.channels == 1 else "RGB"
        for k, f in enumerate(self.files[start:stop]):
            try:
                with Image.open(f) as im:
                    im = im.convert(mode).resize((self.size[1], self.size[0]),
                                                 Image.Resampling.BILINEAR)
                    a = np.asarray(im, np.float32)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise InputError(f"{f}: cannot read the image: {e}") from None
            out[k] = a.reshape(*self.size, self.channels)
        return out


class Slice(ArraySource):
    """Samples ``start:stop`` of another source (the tail kept for ``--val-split``)."""

    def __init__(self, base: ArraySource, start: int, stop: int, display: str):
        self.base, self.start, self.stop = base, start, stop
        self.display = display
        self.offset = base.offset + start
        self.shape = (stop - start, *base.shape[1:])
        self.dtype = base.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.base.read(self.start + start, self.start + stop)


# --------------------------------------------------------------------------------------
# datasets: x and y together


@dataclass
class Dataset:
    x: ArraySource
    y: ArraySource
    #: class names, index = label, when the source says (an image folder, list_classes)
    classes: list[str] | None = None

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise InputError(f"{self.x.display} has {len(self.x)} samples but {self.y.display} "
                             f"has {len(self.y)}: x and y must have the same first dimension")
        if len(self.x) == 0:
            raise InputError(f"{self.x.display}: no samples")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def display(self) -> str:
        return f"{self.x.display} / {self.y.display}"

    def split_tail(self, fraction: float) -> tuple[Dataset, Dataset]:
        """(first 1-fraction, last fraction), contiguous, so both stay streamable."""
        if not 0.0 < fraction < 1.0:
            raise InputError(f"val_split must be between 0 and 1, got {fraction}")
        n = len(self)
        k = int(round(n * fraction))
        if k < 1 or k >= n:
            raise InputError(f"{self.display}: val_split {fraction} of {n} samples leaves "
                             f"{n - k} for training and {k} for validation")
        cut = n - k

        def part(a, lo, hi, what):
            return Slice(a, lo, hi, f"{a.display}[{what}]")

        train = Dataset(part(self.x, 0, cut, f":{cut}"), part(self.y, 0, cut, f":{cut}"),
                        self.classes)
        val = Dataset(part(self.x, cut, n, f"{cut}:"), part(self.y, cut, n, f"{cut}:"),
                      self.classes)
        return train, val

    def close(self) -> None:
        self.x.close()
        self.y.close()


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset | None
    #: where the validation data came from, in words
    val_from: str
    kind: str  # hdf5 npz csv images arrays
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.train.close()
        if self.val is not None:
            self.val.close()

    def describe(self) -> dict:
        d = {"kind": self.kind, "train": {"x": self.train.x.display, "y": self.train.y.display,
                                          "samples": len(self.train),
                                          "sample_shape": list(self.train.x.sample_shape)}}
        if self.val is not None:
            d["val"] = {"x": self.val.x.display, "y": self.val.y.display,
                        "samples": len(self.val), "from": self.val_from}
        else:
            d["val"] = None
        if self.train.classes:
            d["classes"] = self.train.classes
        return d


# --------------------------------------------------------------------------------------
# finding the x/y pair by name

X_WORDS = ("x", "images", "image", "inputs", "input", "features", "data", "samples")
Y_WORDS = ("y", "labels", "label", "targets", "target", "classes_idx")
SPLIT_WORDS = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"),
               "test": ("test", "testing")}
_SEP = re.compile(r"([_./\-])")


@dataclass(frozen=True)
class Pair:
    x: str
    y: str
    split: str  # train val test none

    def __str__(self) -> str:
        return f"{self.x}/{self.y}"


def _split_of(tokens: list[str]) -> str:
    low = [t.lower() for t in tokens]
    for split, words in SPLIT_WORDS.items():
        if any(w in low for w in words):
            return split
    return "none"


def find_pairs(names: dict[str, int]) -> list[Pair]:
    """Every (x, y) pair among ``names`` (name -> number of samples): same name but for an
    x-word replaced by a y-word, same first dimension."""
    pairs = []
    for name, n in names.items():
        tokens = _SEP.split(name)
        for i, tok in enumerate(tokens):
            if tok.lower() not in X_WORDS:
                continue
            for yw in Y_WORDS:
                for yt in dict.fromkeys((yw, yw.upper(), yw.capitalize())):
                    cand = "".join(tokens[:i] + [yt] + tokens[i + 1:])
                    if cand in names and cand != name and names[cand] == n:
                        pairs.append(Pair(name, cand, _split_of(tokens)))
    seen, out = set(), []
    for p in pairs:
        if (p.x, p.y) not in seen:
            seen.add((p.x, p.y))
            out.append(p)
    return out


def _y_for(x: str, names: dict[str, int]) -> str | None:
    for p in find_pairs(names):
        if p.x == x:
            return p.y
    return None


def _swap_split(name: str, to: str) -> list[str]:
    """'train_set_x' -> ['val_set_x', 'valid_set_x', ...] for to='val'."""
    tokens = _SEP.split(name)
    out = []
    for i, tok in enumerate(tokens):
        if tok.lower() in SPLIT_WORDS["train"]:
            for w in SPLIT_WORDS[to]:
                out.append("".join(tokens[:i] + [w] + tokens[i + 1:]))
    return out


def choose_pair(names: dict[str, int], where: str, *, x: str | None, y: str | None,
                role: str) -> Pair:
    """The training pair (role 'train') or, in a separate validation file, the validation
    pair (role 'val': a val pair, else a test pair, else the only pair)."""
    if x is not None:
        if x not in names:
            raise InputError(f"{where}: no array {x!r} (it holds {_listing(names)})")
        y = y or _y_for(x, names)
        if y is None:
            raise InputError(f"{where}: no target array pairs with {x!r}; name it with y")
        if y not in names:
            raise InputError(f"{where}: no array {y!r} (it holds {_listing(names)})")
        return Pair(x, y, _split_of(_SEP.split(x)))
    if y is not None:
        raise InputError(f"{where}: y {y} given without x")
    pairs = find_pairs(names)
    order = ("train", "none") if role == "train" else ("val", "test", "train", "none")
    for split in order:
        cands = [p for p in pairs if p.split == split]
        if len(cands) == 1:
            return cands[0]
        if len(cands) > 1:
            raise InputError(f"{where}: several {split} pairs ({', '.join(map(str, cands))}); "
                             f"choose one with x and y")
    raise InputError(f"{where}: found no x/y pair of arrays by name (it holds "
                     f"{_listing(names)}); name them with x and y")


def matching_val_pair(names: dict[str, int], train: Pair) -> Pair | None:
    """The validation pair matching ``train`` in the same file: ``train_set_x`` ->
    ``val_set_x``/``test_set_x``; for an unsplit pair (``x``/``y``), the one val (else test)
    pair."""
    pairs = find_pairs(names)
    for split in ("val", "test"):
        for cx in _swap_split(train.x, split):
            for p in pairs:
                if p.x == cx:
                    return p
    if train.split == "none":
        for split in ("val", "test"):
            cands = [p for p in pairs if p.split == split]
            if len(cands) == 1:
                return cands[0]
    return None


def _listing(names) -> str:
    items = sorted(names)
    more = f", ... ({len(items)} in all)" if len(items) > 12 else ""
    return ", ".join(items[:12]) + more if items else "nothing"


# --------------------------------------------------------------------------------------
# opening the supported sources


class _Container:
    """Named arrays of one file (HDF5 or npz), opened the same way for x, y and val."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = "npz" if path.suffix.lower() == ".npz" else "hdf5"
        self.names: dict[str, int] = {}
        self._npz: dict[str, np.ndarray] = {}
        if self.kind == "npz":
            self._open_npz()
        else:
            self._open_h5()

    def _open_npz(self):
        from wtransplant.safety.bounds import check_npz

        check_npz(self.path)  # declared sizes against the bytes there, before allocating
        try:
            with np.load(self.path, allow_pickle=False) as z:
                for k in z.files:
                    a = z[k]
                    self._npz[k] = a
                    if a.ndim >= 1:
                        self.names[k] = int(a.shape[0])
        except ValueError as e:  # object arrays need pickle, which is refused
            raise InputError(f"{self.path}: cannot load the .npz: {e}") from None
        except (OSError, EOFError) as e:
            raise InputError(f"{self.path}: not a readable .npz file: {e}") from None

    def _open_h5(self):
        from wtransplant.reading.tree import walk

        with open_source(self.path) as src:
            if src.archive is not None:
                raise InputError(f"{self.path}: a Keras archive, not a data file")
            tree = walk(src)
        for path, node in tree.datasets.items():
            if node.kind in ("float", "int", "uint", "bool") and node.shape and \
                    node.alias_of is None:
                self.names[path.lstrip("/")] = int(node.shape[0])

    def array(self, name: str) -> ArraySource:
        if self.kind == "npz":
            return MemoryArray(self._npz[name], f"{self.path}:{name}")
        return H5Array(self.path, name)


def load_data(data, *, x: str | None = None, y: str | None = None, val_data=None,
              val_x: str | None = None, val_y: str | None = None,
              val_split: float | None = None, image_size: tuple[int, int] | None = None,
              channels: int | None = None) -> DataBundle:
    """Open the training data (and validation data) named on the command line.

    ``data``: a path (HDF5, ``.npz``, ``.csv``, image folder) or a tuple ``(x, y)`` of
    arrays. ``val_data`` likewise, or None: then ``val_split`` (a tail fraction) or the
    matching val/test pair in the same file.
    """
    notes: list[str] = []
    train, kind, container, pair = _open_train(data, x, y, image_size, channels, notes)
    val, val_from = None, "none"
    if val_data is not None:
        if val_split:
            raise InputError("give val_data or val_split, not both")
        val = _open_val(val_data, val_x, val_y, image_size, channels, train)
        val_from = "--val-data"
    elif val_split:
        train, val = train.split_tail(val_split)
        val_from = f"--val-split {val_split} (the last {len(val)} samples)"
    elif container is not None and pair is not None:
        vp = matching_val_pair(container.names, pair)
        if vp is not None:
            val = Dataset(container.array(vp.x), container.array(vp.y), train.classes)
            val_from = f"{vp} in the same file"
    if val is None:
        notes.append("no validation data (no val/test pair found; use val_data or "
                     "val_split): the final evaluation uses the training data")
    elif val.x.sample_shape != train.x.sample_shape:
        raise InputError(f"{val.x.display} has samples of shape {val.x.sample_shape} but "
                         f"{train.x.display} has {train.x.sample_shape}")
    return DataBundle(train, val, val_from, kind, notes)


def _open_train(data, x, y, image_size, channels, notes):
    if isinstance(data, tuple | list) and len(data) == 2:
        xa, ya = (np.asarray(a) for a in data)
        return Dataset(MemoryArray(xa, "x"), MemoryArray(ya, "y")), "arrays", None, None
    p = Path(data)
    if p.is_dir():
        if x or y:
            notes.append("x/y are ignored for an image folder")
        return open_image_folder(p, image_size, channels), "images", None, None
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.suffix.lower() == ".csv":
        return read_csv(p, x=x, y=y), "csv", None, None
    c = _Container(p)
    pair = choose_pair(c.names, str(p), x=x, y=y, role="train")
    return Dataset(c.array(pair.x), c.array(pair.y), _classes_of(c)), c.kind, c, pair


def _open_val(val_data, val_x, val_y, image_size, channels, train: Dataset) -> Dataset:
    if isinstance(val_data, tuple | list) and len(val_data) == 2:
        xa, ya = (np.asarray(a) for a in val_data)
        return Dataset(MemoryArray(xa, "x_val"), MemoryArray(ya, "y_val"))
    p = Path(val_data)
    if p.is_dir():
        ds = open_image_folder(p, image_size, channels)
        if train.classes and ds.classes != train.classes:
            raise InputError(f"{p}: its class folders {ds.classes} differ from the training "
                             f"folder's {train.classes}")
        return ds
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.suffix.lower() == ".csv":
        return read_csv(p, x=val_x, y=val_y)
    c = _Container(p)
    pair = choose_pair(c.names, str(p), x=val_x, y=val_y, role="val")
    return Dataset(c.array(pair.x), c.array(pair.y), _classes_of(c))


def _classes_of(c: _Container) -> list[str] | None:
    """Class names from a ``list_classes`` array, if the file has one (read only if small)."""
    for name in ("list_classes", "classes", "class_names"):
        if name in c.names and c.names[name] <= 100000:
            try:
                a = c.array(name).read(0, c.names[name])
            except InputError:
                return None
            return [v.decode() if isinstance(v, bytes) else str(v) for v in a.tolist()]
    return None


def read_csv(path: Path, *, x: str | None = None, y: str | None = None) -> Dataset:
    """A CSV with a header row: ``y`` names the target column (default: label, target, y,
    class), ``x`` a comma-separated list of feature columns (default: all others). Numeric
    targets stay numbers; text targets become class indices in sorted order."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the CSV: {e}") from None
    if len(rows) < 2:
        raise InputError(f"{path}: a CSV needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if y is None:
        y = next((h for h in header if h.lower() in ("label", "target", "y", "class")), None)
        if y is None:
            raise InputError(f"{path}: no target column named label/target/y/class; name it "
                             f"with y (columns: {', '.join(header[:12])})")
    if y not in header:
        raise InputError(f"{path}: no column {y!r} (columns: {', '.join(header[:12])})")
    yi = header.index(y)
    if x:
        feats = [c.strip() for c in x.split(",")]
        missing = [c for c in feats if c not in header]
        if missing:
            raise InputError(f"{path}: no column(s) {', '.join(missing)}")
        xi = [header.index(c) for c in feats]
    else:
        xi = [i for i in range(len(header)) if i != yi]
    body = rows[1:]
    bad = next((k for k, r in enumerate(body) if len(r) != len(header)), None)
    if bad is not None:
        raise InputError(f"{path}: line {bad + 2} has {len(body[bad])} fields, the header "
                         f"{len(header)}")
    try:
        xa = np.array([[float(r[i]) for i in xi] for r in body], np.float32)
    except ValueError as e:
        raise InputError(f"{path}: a feature cell is not a number ({e})") from None
    labels = [r[yi].strip() for r in body]
    classes = None
    try:
        ya = np.array([float(v) for v in labels])
        if np.all(ya == np.round(ya)):
            ya = ya.astype(np.int64)
    except ValueError:
        classes = sorted(set(labels))
        index = {c: i for i, c in enumerate(classes)}
        ya = np.array([index[v] for v in labels], np.int64)
    return Dataset(MemoryArray(xa, f"{path}:[{len(xi)} feature columns]"),
                   MemoryArray(ya, f"{path}:{y}"), classes)


def open_image_folder(root: Path, image_size, channels) -> Dataset:
    """``root/<class>/<image>``: class index = position of the folder name in sorted order."""
    if image_size is None or channels is None:
        raise InputError(f"{root}: an image folder needs the model's input size (h, w, c)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"{root}: a folder without class subfolders (expected "
                         f"{root}/<class>/<image files>)")
    files, labels = [], []
    for k, c in enumerate(classes):
        found = sorted(f for f in (root / c).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES
                       and f.is_file())
        files += found
        labels += [k] * len(found)
    if not files:
        raise InputError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
                         f"the class folders")
    order = np.random.default_rng(FOLDER_ORDER_SEED).permutation(len(files))
    files = [files[i] for i in order]
    y = np.asarray(labels, np.int64)[order]
    return Dataset(ImageFiles(files, image_size, channels, f"{root}/*/*"),
                   MemoryArray(y, f"{root} (class folders)"), classes)


# --------------------------------------------------------------------------------------
# labels


@dataclass
class LabelInfo:
    kind: str  # int (class indices), onehot, float (regression targets)
    shape: tuple  # per sample
    minimum: float
    maximum: float
    classes: int | None  # number of classes implied (max + 1, or one-hot width)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "min": self.minimum,
                "max": self.maximum, "classes": self.classes}


def label_info(y: ArraySource, chunk: int = 1 << 16, *, skip_nonfinite: bool = False
               ) -> LabelInfo:
    """Scan the targets chunk by chunk: integer class indices, one-hot rows, or real
    values. A NaN/Inf target is refused naming its sample, or with ``skip_nonfinite`` left
    out of the statistics (the batches leave it out of training)."""
    lo, hi = math.inf, -math.inf
    integral, onehot = True, y.sample_shape != ()
    for a in range(0, len(y), chunk):
        b = np.asarray(y.read(a, min(a + chunk, len(y))))
        bad = NonFiniteGuard.bad_rows(b)
        if bad is not None and bad.any():
            if not skip_nonfinite:
                i = int(np.flatnonzero(bad)[0])
                kind = "NaN" if np.isnan(b[i]).any() else "Inf"
                raise InputError(f"{y.display}: target of sample {y.offset + a + i} contains "
                                 f"{kind}; clean the data, or skip such samples "
                                 f"(skip_nonfinite)")
            b = b[~bad]
        if b.dtype.kind == "f":
            integral = integral and bool(np.all(b == np.round(b)))
        if b.size:
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
        if onehot:
            onehot = b.ndim == 2 and bool(np.all((b == 0) | (b == 1))) and \
                bool(np.all(b.sum(axis=1) == 1))
    shape = y.sample_shape
    if onehot:
        return LabelInfo("onehot", shape, lo, hi, int(shape[0]))
    if shape in ((), (1,)) and integral and y.dtype.kind in "biu":
        return LabelInfo("int", shape, lo, hi, int(hi) + 1)
    if shape in ((), (1,)) and integral and lo >= 0 and hi < 1000:
        # float-typed class indices (e.g. from a CSV): classes if they look like them
        return LabelInfo("int", shape, lo, hi, int(hi) + 1)
    return LabelInfo("float", shape, lo, hi, None)


# --------------------------------------------------------------------------------------
# preprocessing and augmentation (numpy, so it runs under any Keras backend)


@dataclass
class Preprocess:
    """x -> ((x * rescale) - mean) / std, reshaped to the model's sample shape; flips and
    rotations for training batches of images (h, w, c)."""

    rescale: float | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    reshape: tuple | None = None
    flip: str | None = None  # horizontal vertical both
    rotation: float = 0.0  # degrees, uniform in [-r, r]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"rescale": self.rescale,
                "mean": None if self.mean is None else np.asarray(self.mean).tolist(),
                "std": None if self.std is None else np.asarray(self.std).tolist(),
                "reshape": list(self.reshape) if self.reshape else None,
                "flip": self.flip, "rotation": self.rotation}

    @property
    def augments(self) -> bool:
        return bool(self.flip) or bool(self.rotation)

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        if self.reshape is not None:
            x = x.reshape((len(x), *self.reshape))
        if self.rescale is not None:
            x = x * np.asarray(self.rescale, x.dtype)
        if self.mean is not None:
            x = (x - self.mean.astype(x.dtype)) / self.std.astype(x.dtype)
        if rng is not None and self.augments:
            x = augment(x, rng, flip=self.flip, rotation=self.rotation)
        return x


def fit_standardize(x: ArraySource, pre: Preprocess, chunk: int = 8192):
    """Per-channel (last axis) mean and std of the training inputs after rescale/reshape,
    in one streamed pass (float64 sums)."""
    s = s2 = None
    n = 0
    base = Preprocess(rescale=pre.rescale, reshape=pre.reshape)
    for a in range(0, len(x), chunk):
        b = base(x.read(a, min(a + chunk, len(x)))).astype(np.float64)
        b = b.reshape(-1, b.shape[-1]) if b.ndim > 1 else b.reshape(-1, 1)
        s = b.sum(0) if s is None else s + b.sum(0)
        s2 = (b * b).sum(0) if s2 is None else s2 + (b * b).sum(0)
        n += len(b)
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    std = np.where(std < 1e-7, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, *, flip: str | None,
            rotation: float) -> np.ndarray:
    """Random flips and rotations of a batch of images (n, h, w, c); bilinear, zero fill."""
    if x.ndim != 4:
        raise InputError(f"augmentation (flip/rotation) needs image batches (n, h, w, c), got "
                         f"shape {x.shape}")
    x = x.copy()
    n = len(x)
    if flip in ("horizontal", "both"):
        m = rng.random(n) < 0.5
        x[m] = x[m, :, ::-1]
    if flip in ("vertical", "both"):
        m = rng.random(n) < 0.5
        x[m] = x[m, ::-1]
    if rotation:
        x = rotate(x, rng.uniform(-rotation, rotation, n))
    return x


def rotate(x: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotate each image (n, h, w, c) about its centre by ``degrees[i]`` (bilinear, zeros
    outside)."""
    n, h, w, _c = x.shape
    t = np.deg2rad(np.asarray(degrees, np.float64))[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    # inverse map: the source pixel of each output pixel
    sy = np.cos(t) * yy - np.sin(t) * xx + cy
    sx = np.sin(t) * yy + np.cos(t) * xx + cx
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    b = np.arange(n)[:, None, None]
    out = np.zeros_like(x)
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                        (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + dy, x0 + dx
        ok = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))[..., None]
        v = x[b, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
        out += np.where(ok, v * wgt, 0).astype(x.dtype)
    return out


# --------------------------------------------------------------------------------------
# batches


def batch_segments(n: int, batch_size: int, rng: np.random.Generator | None
                   ) -> list[list[tuple[int, int]]]:
    """Cut ``range(n)`` into ceil(n / batch_size) contiguous batches. With ``rng``: the
    cut starts at a random offset (the batch that wraps around is read in two slices) and
    the batch order is shuffled. Each batch is a list of (start, stop) slices."""
    nb = max(1, math.ceil(n / batch_size))
    off = int(rng.integers(0, min(batch_size, n))) if rng is not None else 0
    out = []
    for k in range(nb):
        a = off + k * batch_size
        b = min(off + (k + 1) * batch_size, off + n)
        segs = []
        if a < n:
            segs.append((a, min(b, n)))
        if b > n:
            segs.append((max(a, n) - n, b - n))
        out.append(segs)
    if rng is not None:
        order = rng.permutation(nb)
        out = [out[i] for i in order]
    return out


class NonFiniteGuard:
    """NaN/Inf samples, found while the batches are read: one vectorised ``isfinite`` per
    batch (float data only), so the check costs a pass over bytes that are in memory
    anyway and never a second read of the file.

    Without ``skip`` the first non-finite sample is an :class:`InputError` naming the file,
    the dataset and the sample's index; it is also kept in ``error``, because a loader
    thread's exception reaches the training loop wrapped by the framework (the run raises
    ``error`` itself). With ``skip`` such samples are left out of their batch and counted
    (``skipped``: array display -> sample indices)."""

    def __init__(self, skip: bool = False):
        self.skip = bool(skip)
        self.skipped: dict[str, set[int]] = {}
        self.error: InputError | None = None

    @staticmethod
    def bad_rows(a: np.ndarray) -> np.ndarray | None:
        """Boolean per sample: holds a NaN or an Inf. None for integer data (always finite)."""
        if a.dtype.kind not in "fc" or len(a) == 0:
            return None
        return ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)

    def count(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def check(self, ds: Dataset, xb: np.ndarray, yb: np.ndarray, segments
              ) -> tuple[np.ndarray, np.ndarray]:
        bx, by = self.bad_rows(xb), self.bad_rows(yb)
        bad = bx if by is None else by if bx is None else bx | by
        if bad is None or not bad.any():
            return xb, yb
        rows = np.concatenate([np.arange(a, b) for a, b in segments])
        if not self.skip:
            i = int(np.flatnonzero(bad)[0])
            arr, what = (ds.x, "sample") if bx is not None and bx[i] else (ds.y, "target of sample")
            kind = "NaN" if np.isnan(arr.take([(int(rows[i]), int(rows[i]) + 1)])).any() \
                else "Inf"
            self.error = InputError(
                f"{arr.display}: {what} {arr.offset + int(rows[i])} contains {kind}; "
                f"clean the data, or skip such samples (skip_nonfinite)")
            raise self.error
        for side, b in ((ds.x, bx), (ds.y, by)):
            if b is not None and b.any():
                self.skipped.setdefault(side.display, set()).update(
                    int(side.offset + r) for r in rows[b])
        keep = ~bad
        if not keep.any():
            self.error = InputError(
                f"{ds.x.display}: every sample of a batch ({int(rows.min()) + ds.x.offset}.."
                f"{int(rows.max()) + ds.x.offset}) holds NaN or Inf; nothing left to train on")
            raise self.error
        return xb[keep], yb[keep]


#: samples per shuffle table (see BatchReader.perms): the permutations of this many
#: samples' worth of consecutive batch indices are drawn together, from one generator
PERM_TABLE_SAMPLES = 4096


class BatchReader:
    """Batches of a :class:`Dataset` as numpy arrays, a pure function of
    ``(seed, epoch, index)``.

    The samples inside a batch are shuffled by row ``index`` of the epoch's shuffle
    tables (:meth:`perms`); augmentation draws from a generator of its own per batch.
    :meth:`stack` gives a run of batches at once (one pass of the per-batch work over all
    of them), the same arrays as :meth:`batch` for each.

    ``shard=(w, W)``: worker ``w`` of ``W`` reads only its ``1/W`` share of every batch
    (contiguous too), and the last partial batch is dropped so every worker runs the same
    number of steps (multi-worker training).
    """

    def __init__(self, ds: Dataset, batch_size: int, *, shuffle: bool, seed: int,
                 pre: Preprocess | None = None, augment: bool = False,
                 y_dtype=None, shard: tuple[int, int] | None = None,
                 guard: NonFiniteGuard | None = None):
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.ds = ds
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.pre = pre or Preprocess()
        self.augment = augment and self.pre.augments
        self.y_dtype = y_dtype
        self.shard = shard
        self.guard = guard if guard is not None else NonFiniteGuard()
        n = len(ds)
        self._nb = max(1, math.ceil(n / batch_size))
        if shard is not None:
            self._nb = n // batch_size
            if self._nb < 1:
                raise InputError(f"{ds.display}: {n} samples is less than one batch of "
                                 f"{batch_size} for multi-worker training")
        self._cache: tuple[int, list] | None = None
        #: batch indices per shuffle table, and the last table made (epoch, table, rows)
        self._per_table = max(1, PERM_TABLE_SAMPLES // batch_size)
        self._ptable: tuple[int, int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._nb

    def _plan(self, epoch: int) -> list:
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0]) if self.shuffle else None
            plan = batch_segments(len(self.ds), self.batch_size, rng)
            if self.shard is not None:  # full batches only: the same step count everywhere
                plan = [s for s in plan if sum(b - a for a, b in s) == self.batch_size]
            self._cache = (epoch, plan)
        return self._cache[1]

    def segments(self, epoch: int, index: int) -> list[tuple[int, int]]:
        segs = self._plan(epoch)[index]
        if self.shard is None:
            return segs
        w, nw = self.shard
        flat = [range(a, b) for a, b in segs]
        # the batch's positions, cut into nw contiguous pieces: keep piece w
        total = sum(len(r) for r in flat)
        lo, hi = total * w // nw, total * (w + 1) // nw
        out, pos = [], 0
        for r in flat:
            a, b = max(lo, pos), min(hi, pos + len(r))
            if a < b:
                out.append((r.start + a - pos, r.start + b - pos))
            pos += len(r)
        return out

    def _table(self, epoch: int, t: int) -> np.ndarray:
        """Shuffle table ``t`` of ``epoch``: one permutation of ``range(batch_size)`` per
        batch index ``t * per_table ...``, all drawn from one generator seeded by
        ``(seed, epoch, 1, t)`` (one draw per batch cost about as much as reading it)."""
        got = self._ptable  # one tuple: safe to share between loader threads
        if got is not None and got[0] == epoch and got[1] == t:
            return got[2]
        rng = np.random.default_rng([self.seed, epoch, 1, t])
        rows = np.broadcast_to(np.arange(self.batch_size, dtype=np.int32),
                               (self._per_table, self.batch_size))
        table = rng.permuted(rows, axis=1)
        self._ptable = (epoch, t, table)
        return table

    def perms(self, epoch: int, start: int, stop: int, m: int) -> np.ndarray:
        """The shuffles of batches ``start..stop-1`` when each holds ``m`` samples,
        shape (stop - start, m): the batch's row of its table, its entries below ``m``
        (in their order, a uniform permutation of ``range(m)``) when ``m`` is less than
        the batch size (the last batch, a shard's piece, skipped samples)."""
        per = self._per_table
        parts = []
        i = start
        while i < stop:
            t = i // per
            j = min(stop, (t + 1) * per)
            parts.append(self._table(epoch, t)[i - t * per:j - t * per])
            i = j
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if m < self.batch_size:
            rows = rows[rows < m].reshape(len(rows), m)
        return rows

    def size(self, epoch: int, index: int) -> int:
        """Samples in batch ``index`` as planned (before any non-finite one is skipped)."""
        return sum(b - a for a, b in self.segments(epoch, index))

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self._nb:
            raise IndexError(index)
        segs = self.segments(epoch, index)
        xb = self.ds.x.take(segs)
        yb = self.ds.y.take(segs)
        xb, yb = self.guard.check(self.ds, xb, yb, segs)
        if self.shuffle:
            perm = self.perms(epoch, index, index + 1, len(xb))[0]
            xb, yb = xb[perm], yb[perm]
        rng = np.random.default_rng([self.seed, epoch, 1 + index]) if self.augment else None
        xb = self.pre(xb, rng)
        if self.y_dtype is not None:
            yb = np.asarray(yb, dtype=self.y_dtype)
        return xb, yb

    def stack(self, epoch: int, start: int, stop: int
              ) -> tuple[np.ndarray, np.ndarray] | None:
        """``batch(epoch, i)`` for ``i`` in ``range(start, stop)``, stacked: two arrays
        of shape (stop - start, m, ...), the batches' samples read slice by slice into one
        array and checked, shuffled and preprocessed together. ``None`` where this does not
        apply (the batches differ in size, augmentation, a non-finite sample): then ask
        :meth:`batch` for each."""
        if self.augment or not 0 <= start < stop <= self._nb:
            return None
        segs = [self.segments(epoch, i) for i in range(start, stop)]
        m = sum(b - a for a, b in segs[0])
        if any(sum(b - a for a, b in s) != m for s in segs):
            return None
        flat = [ab for s in segs for ab in s]
        xs, ys = self.ds.x.take(flat), self.ds.y.take(flat)
        bx, by = self.guard.bad_rows(xs), self.guard.bad_rows(ys)
        if (bx is not None and bx.any()) or (by is not None and by.any()):
            return None
        k = stop - start
        if self.shuffle:
            idx = self.perms(epoch, start, stop, m)
            idx = (idx + (np.arange(k, dtype=idx.dtype) * m)[:, None]).ravel()
            xs, ys = xs[idx], ys[idx]
        xs = self.pre(xs, None)
        if self.y_dtype is not None:
            ys = np.asarray(ys, dtype=self.y_dtype)
        return xs.reshape(k, m, *xs.shape[1:]), ys.reshape(k, m, *ys.shape[1:])
