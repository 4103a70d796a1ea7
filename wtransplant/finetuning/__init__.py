"""``wtransplant finetune``: adapt a transplanted model to new data.

Layer 1 (h5py + numpy): :mod:`.data` (readers that stream HDF5 in contiguous batches,
``.npz``, CSV, image folders; preprocessing and augmentation), :mod:`.records`
(checkpoints, history files, curves), :mod:`.options`. Layer 2 (public Keras API, any
backend): :mod:`.train` (:func:`finetune`). Layer 3 (TensorFlow only, on request):
:mod:`.tfextras` (the tf.data input pipeline, tf.distribute strategies).

Importing this package imports neither Keras nor TensorFlow; ``wtransplant.finetune``
(the function) is loaded on first use.
"""
