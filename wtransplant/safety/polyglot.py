"""One parser per file: a file whose bytes are both a zip archive and HDF5 is refused.

HDF5 looks for its superblock at offset 0, 512, 1024, 2048... (a "userblock" may come
first); zip readers look for the end-of-central-directory record near the end of the file
(or a local header at offset 0). A file can satisfy both, and then wtransplant's checks
and Keras' loader could read different models from it. :func:`check_single_format`
finds both signatures and refuses. Cheap: a few 8-byte reads and the last 64 KiB.
"""

from __future__ import annotations

import os

from wtransplant.errors import UnsafeInputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_EOCD = b"PK\x05\x06"
_LOCAL = b"PK\x03\x04"
_TAIL = (1 << 16) + 22


def hdf5_offsets(fh, size: int) -> list[int]:
    """Offsets where the HDF5 library would find a superblock signature."""
    out = []
    off = 0
    while off + 8 <= size:
        fh.seek(off)
        if fh.read(8) == HDF5_SIGNATURE:
            out.append(off)
        off = 512 if off == 0 else off * 2
    return out


def zip_evidence(fh, size: int) -> str | None:
    fh.seek(0)
    if fh.read(4) == _LOCAL:
        return "a zip local header at offset 0"
    start = max(size - _TAIL, 0)
    fh.seek(start)
    tail = fh.read()
    i = len(tail)
    while (i := tail.rfind(_EOCD, 0, i)) >= 0:
        # a real record points back at a central directory ("PK\x01\x02") right before
        # it: chance bytes inside HDF5 data almost never do
        rec = tail[i:i + 22]
        if len(rec) < 22:
            continue
        cd_size = int.from_bytes(rec[12:16], "little")
        if cd_size == 0xFFFFFFFF:
            return f"a zip64 end-of-directory record at offset {start + i}"
        cd_start = start + i - cd_size
        if cd_size and cd_start >= 0:
            fh.seek(cd_start)
            if fh.read(4) == b"PK\x01\x02":
                return f"a zip end-of-directory record at offset {start + i}"
    return None


def check_single_format(path) -> None:
    """Raise UnsafeInputError (exit 2) if ``path`` is both a zip archive and HDF5."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            h5 = hdf5_offsets(fh, size)
            if not h5:
                return
            z = zip_evidence(fh, size)
    except OSError:
        return  # the caller's own open reports it
    if z:
        raise UnsafeInputError(
            f"the file is both HDF5 (superblock at offset {h5[0]}) and a zip archive ({z}): "
            f"a polyglot that different readers would read as different models; refused",
            path=str(path))
