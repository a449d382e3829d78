"""The jobs a user starts, composed from the layers below.

Modules:
  plan.py        the run's schedule in steps: epochs, host calls, evaluations, checkpoints
  init_from.py   --init_from: a new run starts from another run's or an export's weights
  target.py      --target_accuracy: stop at the first evaluation reaching it; time to it
  train.py       the training run: build, resume, train, evaluate, save, export, report
  evaluation.py  the evaluation job: a run's checkpoints, once or as training writes them
  doctor.py      trainer.doctor's checks, in order, one line each; the exit code
  machine_checks.py  its checks of the machine: TensorFlow, devices, workers, folders, /dev/shm
  compute_checks.py  its checks of the computation: strategy, kernels, XLA, a timed run

May import: trainer.core, trainer.data, trainer.model, trainer.run_folder, trainer.report.
"""
