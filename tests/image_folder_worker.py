"""One worker of the image-folder multi-worker test: `python -m tests.image_folder_worker
DATA_DIR MODEL_DIR OUT.json` with TF_CONFIG from the parent.

Trains through the same code a user's run does, and records which examples its own input
pipeline gives in each of the first two epochs (the ids the test images carry).
"""

import json
import sys

import tensorflow as tf

from tests import image_folders
from trainer.core.config import Config
from trainer.core import distribute
from trainer.data import pipeline
from trainer.jobs import train


def main(data_dir, model_dir, out):
  config = Config(strategy='multi_worker', dataset='image_folder', data_dir=data_dir,
                  model_dir=model_dir, batch_size=8, epochs=2, steps_per_loop=3)
  strategy = distribute.create_strategy('multi_worker')
  source = pipeline.source_for(config)
  outcome = train.train_and_evaluate(config, strategy, source)
  resolver = strategy.cluster_resolver
  context = tf.distribute.InputContext(
      num_input_pipelines=distribute.num_workers(strategy), input_pipeline_id=resolver.task_id,
      num_replicas_in_sync=strategy.num_replicas_in_sync)
  steps_per_epoch = 24 // 8
  batches = pipeline.train_dataset(source, context, 8, steps_per_epoch, config.seed,
                                   ).take(2 * steps_per_epoch)
  ids = [image_folders.ids(images).tolist() for images, _ in batches]
  epochs = [sum(ids[:steps_per_epoch], []), sum(ids[steps_per_epoch:], [])]
  with open(out, 'w') as f:
    json.dump({'epochs': epochs, 'replicas': strategy.num_replicas_in_sync,
               'eval_examples': outcome.metrics['eval_examples'],
               'global_step': outcome.metrics['global_step']}, f)


if __name__ == '__main__':
  main(*sys.argv[1:])
