"""Stage 4, checking: reference data, the NumPy forward pass of a source's own
architecture, parity comparisons, per-layer diagnosis and ``wtransplant verify``. The
NumPy parts (:mod:`.data`, :mod:`.parity`, :mod:`.reference`, :mod:`.npops`) need no
Keras."""
