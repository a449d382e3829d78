"""One worker of the multi-worker test: trains from TF_CONFIG, saves its final weights.

Run as `python -m tests.multi_worker_child MODEL_DIR OUT.npz`; TF_CONFIG comes from the
parent. It goes through the same create_strategy/train_and_evaluate a user's run does,
with small in-memory data instead of a download.
"""

import sys

import numpy as np

from tests.conftest import make_source  # Also splits the CPU in two: harmless here.
from trainer.core.config import Config
from trainer.core import distribute
from trainer.jobs import train


def main(model_dir, out):
  # Muon, as configs/multi_worker.cfg: its orthogonalised step must come out the same on
  # every worker.
  config = Config(strategy='multi_worker', model_dir=model_dir, batch_size=32, epochs=0,
                  train_steps=12, steps_per_loop=4, profile_steps='5,6', optimizer='muon',
                  learning_rate=1e-2)
  strategy = distribute.create_strategy('multi_worker')
  outcome = train.train_and_evaluate(config, strategy, make_source())
  np.savez(out, *outcome.trainer.model.get_weights(),
           eval_examples=outcome.metrics['eval_examples'], replicas=strategy.num_replicas_in_sync)


if __name__ == '__main__':
  main(*sys.argv[1:])
