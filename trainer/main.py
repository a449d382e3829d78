"""`python -m trainer.main [--flagfile=configs/NAME.cfg] [--flag=value ...]`."""

import logging as std_logging
import os
import sys

# TensorFlow's C++ INFO lines (CUDA probing, oneDNN notices) drown the progress output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from trainer import flags as trainer_flags
from trainer.errors import EXIT_USER_ERROR, UserError

trainer_flags.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    config = trainer_flags.config_from_flags(flags.FLAGS)
    from trainer import train  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
    # TensorFlow's Python INFO lines (one per all-reduce trace) bury the progress lines.
    std_logging.getLogger('tensorflow').setLevel(std_logging.WARNING)
    train.train_and_evaluate(config)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


if __name__ == '__main__':
  app.run(main)
