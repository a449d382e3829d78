"""The model and what is compiled around it.

Modules:
  cnn.py         the tutorial's CNN, layer for layer
  optimizers.py  the Keras optimizer of --optimizer and its learning-rate schedule
  muon.py        Keras' Muon with the conv kernels orthogonalised too
  metrics.py     loss and accuracy sums and the confusion matrix, summed over replicas
  input_wait.py  the training loop's clocks: time spent waiting for input
  steps.py       Trainer: model, optimizer and the compiled train and eval loops
  kernels.py     the ops of a compiled function that have no GPU kernel for their dtypes
  compiled.py    a Config's compiled loops and XLA steps, built apart from a run, for checks
  export.py      the SavedModel that serves uint8 images and encoded image files
  litert.py      --export_litert: the served model as a LiteRT file, float or int8
  freezing.py    --freeze: layers held at their starting weights, for a while or throughout
  whitening.py   --whiten_init: the first convolution starts as a whitening filter bank

May import: trainer.core, trainer.data.
"""
