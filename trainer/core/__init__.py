"""What every layer shares.

Modules:
  config.py      the run's Config: every setting, validated, immutable
  errors.py      UserError (one-line errors, exit 2), Preempted, the exit codes
  distribute.py  the tf.distribute strategy of --strategy; workers, chief, batch arithmetic
  accelerators.py  the NVIDIA devices here, and the GPUs and CUDA TensorFlow sees
  precision.py   --mixed_precision=auto: the policy this TPU, GPU or CPU computes fastest
  startup.py     a multi-worker start: wait for every worker, say who is missing, time out
  trial.py       the hyperparameter tuning trial this process is, and its own folders

May import: nothing of the trainer.
"""
