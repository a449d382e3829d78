"""Each optimizer, with op determinism, under MirroredStrategy on 2 logical CPU devices:
trains uninterrupted, and again in two halves through a checkpoint; prints one JSON line
per optimizer with the losses and whether the weights came out bit-identical.

Run as `python -m tests.optimizer_resume_child DIR NAME...`: op determinism is global and
forbids the clocks other tests read, so it gets a process of its own.
"""

import json
import os
import sys

import numpy as np

from tests.conftest import make_source  # Also splits the CPU in two.
from trainer import strategy as strategy_lib
from trainer import train
from trainer.config import Config

# A rate that suits each optimizer on the small test data (LAMB and Muon step relative to
# the weights' norms, Lion by the sign of the update).
RATES = {'adam': 3e-3, 'adamw': 3e-3, 'lamb': 2e-2, 'lion': 1e-3, 'sgd': 5e-2, 'muon': 2e-2}


def main(root, *names):
  source = make_source()
  for name in names:
    config = Config(optimizer=name, learning_rate=RATES[name], batch_size=32, epochs=0,
                    train_steps=16, steps_per_loop=4, checkpoint_every_steps=8, eval_every_steps=4,
                    strategy='mirrored', num_cpu_devices=2, deterministic=True,
                    ema_decay=0.9, weight_decay=None if name == 'adam' else 1e-3,
                    model_dir=os.path.join(root, name, 'whole'))
    strategy = lambda: strategy_lib.create_strategy('mirrored', num_cpu_devices=2)
    whole = train.train_and_evaluate(config, strategy(), source)
    halves_dir = os.path.join(root, name, 'halves')
    train.train_and_evaluate(config.replace(model_dir=halves_dir, train_steps=8), strategy(),
                             source)
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
