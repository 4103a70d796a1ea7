"""Stage 1, reading (h5py + numpy only): open a source read-only and safely, walk its tree,
tell which program wrote it, name its tensors as its users know them, and say what
architecture they imply (``wtransplant inspect``)."""
