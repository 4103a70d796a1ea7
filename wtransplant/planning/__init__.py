"""Stage 2, planning (h5py + numpy + yaml, no Keras): the spec, drafts and data-settled
drafts, the graph a spec describes, layout knowledge per layer type and convention
(:mod:`.layouts`), and the mapping plan that gives every Keras variable one source."""
