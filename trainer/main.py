"""`python -m trainer.main [--flagfile=configs/NAME.cfg] [--flag=value ...]`."""

import os
import sys
import threading

# TensorFlow's C++ INFO lines (CUDA probing, oneDNN notices) drown the progress output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from trainer.core.errors import EXIT_PEER_LOST, EXIT_PREEMPTED, EXIT_USER_ERROR, Preempted, \
    StartupEnded, UserError
from trainer import flags as trainer_flags
from trainer.report import logs
from trainer.run_folder import run_lock

trainer_flags.define_flags()


def _thread_failed(args):
  # TensorFlow's background threads (the preemption handler's peer watcher, say) die with
  # a long traceback when a peer vanishes; the main thread reports the failure itself.
  lines = str(args.exc_value).strip().splitlines()
  logging.warning('background thread %s stopped: %s%s', getattr(args.thread, 'name', '?'),
                  args.exc_type.__name__, f': {lines[0][:200]}' if lines else '')


def main(argv):
  logs.setup(trainer_flags.log_format(flags.FLAGS), flags.FLAGS.verbosity)
  threading.excepthook = _thread_failed
  try:
    config = trainer_flags.config_from_command_line(argv)
    if config.model_dir and config.strategy != 'multi_worker':  # Workers share the chief's.
      run_lock.refuse_if_held(config.model_dir)
    from trainer.jobs import train  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
    from trainer.core import distribute  # pylint: disable=g-import-not-at-top
    try:
      train.train_and_evaluate(config)
    except distribute.PEER_FAILURES as e:
      if config.strategy != 'multi_worker':
        raise
      logs.plain_line(f'error: {distribute.peer_failure_message(e)}', 'ERROR')
      sys.exit(EXIT_PEER_LOST)
  except StartupEnded as e:
    logs.plain_line(f'stopped: {e}', 'ERROR' if e.exit_code == EXIT_PEER_LOST else 'WARNING')
    sys.exit(e.exit_code)
  except UserError as e:
    logs.plain_line(f'error: {e}', 'ERROR')
    sys.exit(EXIT_USER_ERROR)
  except Preempted as e:
    logs.plain_line(f'stopped: {e}', 'WARNING')
    sys.exit(EXIT_PREEMPTED)


if __name__ == '__main__':
  app.run(main, flags_parser=trainer_flags.parse_flags)
