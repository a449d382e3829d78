"""Each optimizer, with op determinism, under MirroredStrategy on 2 logical CPU devices:
trains uninterrupted, then again from the checkpoint that run saved half way (as after a
kill right after that save); prints one JSON line per optimizer with the losses and whether
the weights came out bit-identical.

Run as `python -m tests.optimizer_resume_child DIR NAME...`: op determinism is global and
forbids the clocks other tests read, so it gets a process of its own.
"""

import glob
import json
import os
import shutil
import sys

import numpy as np
import tensorflow as tf

from tests.conftest import make_source  # Also splits the CPU in two.
from trainer.core.config import Config
from trainer.core import distribute
from trainer.jobs import train

# A rate that suits each optimizer on the small test data (LAMB and Muon step relative to
# the weights' norms, Lion by the sign of the update).
RATES = {'adam': 3e-3, 'adamw': 3e-3, 'lamb': 2e-2, 'lion': 1e-3, 'sgd': 5e-2, 'muon': 2e-2}


def _as_saved_at(step, run_dir, into):
  """A run folder as `run_dir` was once it had saved step `step`: that checkpoint, and the
  record of what the checkpoints were trained on."""
  source, target = os.path.join(run_dir, 'checkpoints'), os.path.join(into, 'checkpoints')
  os.makedirs(target)
  for path in glob.glob(os.path.join(source, f'ckpt-{step}.*')) + [
      os.path.join(source, 'signature.json')]:
    shutil.copy(path, target)
  tf.compat.v1.train.update_checkpoint_state(target, os.path.join(target, f'ckpt-{step}'))


def main(root, *names):
  source = make_source()
  for name in names:
    config = Config(optimizer=name, learning_rate=RATES[name], batch_size=32, epochs=0,
                    train_steps=16, steps_per_loop=4, checkpoint_every_steps=8, eval_every_steps=4,
                    strategy='mirrored', num_cpu_devices=2, deterministic=True,
                    ema_decay=0.9, weight_decay=None if name == 'adam' else 1e-3,
                    model_dir=os.path.join(root, name, 'whole'))
    strategy = lambda: distribute.create_strategy('mirrored', num_cpu_devices=2)
    whole = train.train_and_evaluate(config, strategy(), source)
    halves_dir = os.path.join(root, name, 'halves')
    _as_saved_at(8, os.path.join(root, name, 'whole'), halves_dir)
    resumed = train.train_and_evaluate(config.replace(model_dir=halves_dir), strategy(), source)
    identical = all(np.array_equal(a, b) for a, b in zip(
        whole.trainer.model.get_weights(), resumed.trainer.model.get_weights()))
    history = whole.metrics['eval_history']
    print(json.dumps({'optimizer': name, 'identical': identical,
                      # The averaged weights (--ema_decay) must resume exactly too.
                      'identical_eval': whole.metrics['eval_loss'] == resumed.metrics['eval_loss'],
                      'first_eval_loss': history[0]['eval_loss'],
                      'final_eval_loss': whole.metrics['eval_loss'],
                      'final_accuracy': whole.metrics['eval_accuracy'],
                      'resumed_accuracy': resumed.metrics['eval_accuracy']}), flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
