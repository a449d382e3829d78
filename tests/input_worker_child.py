"""One worker of the multi-worker input test: the batches its replica gets from each input.

Run as `python -m tests.input_worker_child OUT.json`; TF_CONFIG comes from the parent.
"""

import hashlib
import json
import sys

from tests.batches import device_batches, host_batches
from tests.conftest import example_ids, id_source
from trainer.core import distribute


def _steps(batches):
  return [{'ids': example_ids(images).tolist(), 'labels': labels.tolist(),
           'sha256': hashlib.sha256(images.tobytes()).hexdigest()}
          for step in batches for images, labels in step]


def main(out):
  strategy = distribute.create_strategy('multi_worker')
  source = id_source(num_train=64, num_eval=10)
  settings = dict(global_batch=8, steps_per_epoch=8, seed=1)
  result = {'replicas': strategy.num_replicas_in_sync}
  for augment in ('none', 'flip_shift'):
    suffix = '' if augment == 'none' else '_' + augment
    result['host' + suffix] = _steps(host_batches(strategy, source, 16, augment=augment,
                                                  **settings))
    result['device' + suffix] = _steps(device_batches(strategy, source, 16, augment=augment,
                                                      **settings))
  with open(out, 'w') as f:
    json.dump(result, f)


if __name__ == '__main__':
  main(*sys.argv[1:])
