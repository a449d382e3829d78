"""configs/tpu.cfg as a TPU route runs it, on this machine's CPU: 60 steps of the whole
preset (batch 1024, bfloat16, device input, Muon) on real CIFAR-10 train, evaluate, export
a SavedModel, and trainer.predict reads it. `make test-tpu-versions` runs this under each
TensorFlow a TPU launcher installs (launch/tpu/*.txt), `make test` under requirements.txt's.
"""

import json
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests import forked
from tests.test_main import run_main

pytestmark = [pytest.mark.slow, pytest.mark.tpu_path]

_STEPS = 60


def test_the_tpu_preset_trains_exports_and_predicts_on_cpu(tmp_path, cifar_dir):
  run = tmp_path / 'tpu'
  # bfloat16, what the preset's --mixed_precision=auto picks on a TPU; on a CPU it would
  # follow the CPU's bfloat16 units, which differ from one machine to the next.
  result = run_main('--flagfile=configs/tpu.cfg', '--strategy=default',
                    '--mixed_precision=mixed_bfloat16',
                    f'--train_steps={_STEPS}', f'--data_dir={cifar_dir}', f'--model_dir={run}',
                    timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  config = json.loads((run / 'config.json').read_text())
  assert (config['mixed_precision'], config['input'], config['batch_size']) == \
      ('mixed_bfloat16', 'device', 1024)
  results = json.loads((run / 'results.json').read_text())
  assert results['global_step'] == _STEPS and results['eval_examples'] == 10000
  # bfloat16 training learns: chance is 0.1; 60 steps reach about 0.57 on every TensorFlow
  # the routes install (2.18, 2.20, 2.21).
  assert results['eval_accuracy'] > 0.45, results

  # The export answers trainer.predict, as the SavedModel's own signature does.
  images = _test_images(cifar_dir, 4)
  paths = []
  for i, image in enumerate(images):
    path = tmp_path / f'image{i}.png'
    path.write_bytes(tf.io.encode_png(image).numpy())
    paths.append(str(path))
  printed = forked.run([sys.executable, '-m', 'trainer.predict', f'--model={run}/export',
                        *paths], cwd=REPO, capture_output=True, text=True, timeout=180)
  assert printed.returncode == 0, printed.stderr[-3000:]
  lines = [line.split('\t') for line in printed.stdout.splitlines()]
  served = tf.saved_model.load(str(run / 'export')).signatures['serving_default'](
      images=tf.constant(np.stack(images)))
  names = [n.decode() for n in served['class_name'].numpy()]
  assert [(line[0], line[1]) for line in lines] == list(zip(paths, names))


def _test_images(data_dir, count):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  split = tfds.load('cifar10', split=f'test[:{count}]', data_dir=data_dir, download=False)
  return [example['image'].numpy() for example in split]
