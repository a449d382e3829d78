"""`python -m trainer.evaluate --model_dir=RUN [--checkpoint=latest|best|PATH] [--split=test]
[--eval_flip] [--watch]`: evaluate a run's checkpoint(s); see trainer/jobs/evaluation.py.
RUN is any folder trainer/run_folder/locate.py finds the run from."""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from trainer.core.errors import EXIT_USER_ERROR, UserError
from trainer.report import logs

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'The run folder (what training got as '
                                 '--model_dir), a Vertex AI job\'s base output folder, or the '
                                 'run\'s export or checkpoint folder: its config.json says what '
                                 'to rebuild and where the checkpoints are.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', 'latest, best, or a checkpoint '
                                  'path (RUN/checkpoints/ckpt-N) or folder.')
_SPLIT = flags.DEFINE_string('split', None, 'Split to evaluate on; default: the run\'s '
                             '--eval_split.')
_DATASET = flags.DEFINE_string('dataset', None, 'Default: the run\'s.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Default: the run\'s.')
_EVAL_FLIP = flags.DEFINE_bool('eval_flip', None, 'Average each image\'s logits with its '
                               'mirror image\'s; default: as the run evaluated.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Global eval batch; default: the run\'s.')
_STRATEGY = flags.DEFINE_string('strategy', 'default', 'tf.distribute strategy, as for '
                                'training (--watch: a single machine).')
_NUM_CPU_DEVICES = flags.DEFINE_integer('num_cpu_devices', 0, 'With --strategy=mirrored: '
                                        'logical CPU devices.')
_TPU = flags.DEFINE_string('tpu', '', 'With --strategy=tpu: TPU name or address.')
_WATCH = flags.DEFINE_bool('watch', False, 'Evaluate each new checkpoint as training writes '
                           'it, until the run\'s final step is evaluated.')
_WATCH_TIMEOUT = flags.DEFINE_float('watch_timeout', 3600, 'With --watch: stop after this '
                                    'many seconds without a new checkpoint.')
_POLL_SECONDS = flags.DEFINE_float('poll_seconds', 10, 'With --watch: seconds between looks '
                                   'for a new checkpoint.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logs.setup('absl' if flags.FLAGS.verbosity > 0 else 'text', flags.FLAGS.verbosity)
  # pylint: disable=g-import-not-at-top  (these import TensorFlow)
  from trainer.jobs import evaluation
  from trainer.run_folder import locate
  try:
    if not _MODEL_DIR.value:
      raise UserError('--model_dir is required: the folder of the run to evaluate')
    if _WATCH.value and _STRATEGY.value == 'multi_worker':
      raise UserError('--watch runs on one machine; use --strategy=default, one_device or '
                      'mirrored (one-off evaluation takes multi_worker)')
    if _WATCH.value:
      run = locate.wait(_MODEL_DIR.value, _WATCH_TIMEOUT.value, _POLL_SECONDS.value)
    else:
      run = locate.find(_MODEL_DIR.value)
    overrides = dict(dataset=_DATASET.value, data_dir=_DATA_DIR.value,
                     eval_flip=_EVAL_FLIP.value, batch_size=_BATCH_SIZE.value)
    config = run.config.replace(
        strategy=_STRATEGY.value, num_cpu_devices=_NUM_CPU_DEVICES.value, tpu=_TPU.value,
        **{name: value for name, value in overrides.items() if value is not None})
    evaluator = evaluation.Evaluator(config, run.dirs, _SPLIT.value or config.eval_split)
    try:
      if _WATCH.value:
        evaluation.watch(evaluator, _POLL_SECONDS.value, _WATCH_TIMEOUT.value)
      else:
        evaluator.evaluate(evaluator.resolve(_CHECKPOINT.value))
    finally:
      evaluator.close()
  except evaluation.CheckpointGone as e:
    print(f'error: checkpoint {_CHECKPOINT.value} cannot be read: {e}', file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


if __name__ == '__main__':
  app.run(main)
