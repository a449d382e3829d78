"""The jobs a user starts, composed from the layers below.

Modules:
  plan.py        the run's schedule in steps: epochs, host calls, evaluations, checkpoints
  train.py       the training run: build, resume, train, evaluate, save, export, report
  evaluation.py  the evaluation job: a run's checkpoints, once or as training writes them

May import: trainer.core, trainer.data, trainer.model, trainer.run_folder, trainer.report.
"""
