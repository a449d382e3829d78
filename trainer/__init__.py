"""A TensorFlow trainer for the CIFAR-10 tutorial CNN under any tf.distribute strategy.

Entry points, run as `python -m trainer.NAME`:
  main.py      train and evaluate: flags in, a run folder out
  evaluate.py  evaluate a run's checkpoints, once or as training writes them
  predict.py   classify image files in bulk with a run's export: files, folders, buckets
  doctor.py    check this machine or cluster for a run's flags: devices, workers, folders, speed
  flags.py     the training flags, and the Config they build

Packages, from the bottom up; each imports only the packages its own docstring names:
  core/        the Config, the errors a user can trip, the tf.distribute strategy
  data/        the data path: sources, shards, data order, host and device input
  model/       the model and its compiled steps: CNN, optimizers, loops, metrics, export
  run_folder/  what a run keeps on disk: folders, lock, checkpoints, preemption, records
  report/      what a run tells people: console and JSON logs, progress, TensorBoard
  jobs/        the training run and the evaluation job, composed from all of the above
  prediction/  batch prediction with an export: files in, a line each out, accuracy
"""
