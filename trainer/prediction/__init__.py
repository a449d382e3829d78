"""Batch prediction: image files in, a line per file out, through a run's export.

Modules:
  inputs.py   what to classify: files, folders, globs and gs:// prefixes, as one list
  exports.py  the export, loaded: its signature, image shape, class names, pixel limit
  reading.py  the files read, checked and decoded in parallel (tf.data); why one failed
  writers.py  a line per file: on the console, or in a JSON Lines or CSV file
  job.py      the job: batches through the model, errors, progress, summary, accuracy

May import: trainer.core, trainer.data, trainer.model, trainer.report.
"""
