"""`python -m trainer.main [--flagfile=configs/NAME.cfg] [--flag=value ...]`."""

import os
import sys
import threading

# TensorFlow's C++ INFO lines (CUDA probing, oneDNN notices) drown the progress output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from trainer import cli_logging
from trainer import flags as trainer_flags
from trainer.errors import EXIT_PEER_LOST, EXIT_PREEMPTED, EXIT_USER_ERROR, Preempted, \
    UserError

trainer_flags.define_flags()


def _thread_failed(args):
  # TensorFlow's background threads (the preemption handler's peer watcher, say) die with
  # a long traceback when a peer vanishes; the main thread reports the failure itself.
  lines = str(args.exc_value).strip().splitlines()
  logging.warning('background thread %s stopped: %s%s', getattr(args.thread, 'name', '?'),
                  args.exc_type.__name__, f': {lines[0][:200]}' if lines else '')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  threading.excepthook = _thread_failed
  try:
    config = trainer_flags.config_from_flags(flags.FLAGS)
    from trainer import train  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
    cli_logging.quiet_libraries(flags.FLAGS.verbosity)
    from trainer import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    try:
      train.train_and_evaluate(config)
    except strategy_lib.PEER_FAILURES as e:
      if config.strategy != 'multi_worker':
        raise
      print(f'error: {strategy_lib.peer_failure_message(e)}', file=sys.stderr)
      sys.exit(EXIT_PEER_LOST)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
  except Preempted as e:
    print(f'stopped: {e}', file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)


if __name__ == '__main__':
  app.run(main)
