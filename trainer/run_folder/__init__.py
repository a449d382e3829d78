"""What a run keeps on disk, and how it keeps it safe.

Modules:
  run_dirs.py       where a run writes: flags, then Vertex AI's variables, then defaults
  locate.py         a run's folder is its handle: every part found from it, or from a part
  run_lock.py       one writer per run folder: a flock locally, a renewed lease on gs://
  lease_objects.py  the lease's object: conditional writes on gs://, a plain file elsewhere
  records.py        config.json, results.json and the other JSON records
  checkpointing.py  periodic checkpoints, resume, the best model
  preemption.py     SIGTERM or Ctrl-C: save at the end of the loop, exit 75
  failed_writes.py  a failed write stops the run with one line

May import: trainer.core.
"""
