"""`python -m trainer.doctor [--flagfile=configs/NAME.cfg] [--flag=value ...]`: checks this
machine (or this worker of a cluster) for the run those flags describe; see
trainer/jobs/doctor.py. Exit 0: no check failed; 1: some did; 2: bad flags."""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from trainer.core.errors import EXIT_USER_ERROR, UserError
from trainer import flags as trainer_flags
from trainer.report import logs

trainer_flags.define_flags()


def main(argv):
  log_format = trainer_flags.log_format(flags.FLAGS)
  logs.setup(log_format, flags.FLAGS.verbosity)
  try:
    config = trainer_flags.config_from_command_line(argv)
    from trainer.jobs import doctor  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
    code = doctor.run(config, log_format)
  except UserError as e:
    logs.plain_line(f'error: {e}', 'ERROR')
    sys.exit(EXIT_USER_ERROR)
  sys.exit(code)


if __name__ == '__main__':
  app.run(main, flags_parser=trainer_flags.parse_flags)
