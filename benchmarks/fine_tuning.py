"""Fine-tuning: a small image folder trained from a CIFAR-10 run's weights against from scratch.

    python -m benchmarks.fine_tuning --data_dir=../shared/datasets/tfds

1. A source run on CIFAR-10's training split with the default flags (reused when --work_dir
   already holds a finished one).
2. An image folder of --classes, written as PNG files from CIFAR-10's *test* split, which the
   source run never trained on: --train_per_class images each in train/, the next
   --test_per_class in test/.
3. For each seed, the same run on that folder from scratch and with --init_from (and any
   --variants), with the same flags and budget. Prints the median test accuracy over the
   seeds, its spread, and each seed's.

The source run evaluates on the test split after each epoch, as every run does; that only
measures it: --init_from takes the newest checkpoint, never one picked by test accuracy.
Runs unchanged on a GPU or TPU machine.
"""

import os
import shutil
import statistics
import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import measure

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS folder with cifar10.')
_WORK_DIR = flags.DEFINE_string('work_dir', None, 'Where the source run, the image folder and '
                                'the runs go; default: a new temporary folder. A finished '
                                'source run there is reused.')
_CLASSES = flags.DEFINE_list('classes', ['bird', 'cat', 'deer', 'dog', 'frog'],
                             'CIFAR-10 classes of the small folder.')
_TRAIN_PER_CLASS = flags.DEFINE_integer('train_per_class', 100, 'Training images per class.')
_TEST_PER_CLASS = flags.DEFINE_integer('test_per_class', 200, 'Test images per class.')
_SEEDS = flags.DEFINE_list('seeds', ['1', '2', '3'], 'Seeds of the runs on the folder.')
_EPOCHS = flags.DEFINE_integer('epochs', 20, 'Epochs of each run on the folder.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Batch of each run on the folder.')
_VARIANTS = flags.DEFINE_list('variants', ['--freeze=conv --freeze_epochs=5'],
                              'More fine-tuned rows: extra flags of each, besides --init_from.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'A few steps of each, to check the script works.')
_FOLDER_CHILD = flags.DEFINE_string('write_folder_child', None, 'Internal: write the image '
                                    'folder here, in this process.')


def _run(args, module='trainer.main'):
  measure.run([sys.executable, '-m', module, *args])


def _source_run(work_dir):
  model_dir = os.path.join(work_dir, 'cifar10_source')
  if os.path.exists(os.path.join(model_dir, 'results.json')):
    print(f'source run: reusing {model_dir}', flush=True)
  else:
    print(f'source run: CIFAR-10 train split, default flags -> {model_dir}', flush=True)
    args = [f'--model_dir={model_dir}']
    args += [f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else []
    if _SMOKE.value:
      args += ['--train_steps=30', '--train_split=train[:2048]', '--eval_split=test[:512]']
    _run(args)
  results = measure.record(model_dir)
  print(f'source run: test accuracy {results["eval_accuracy"]:.4f} at step '
        f'{results["global_step"]}', flush=True)
  return model_dir


def _per_class():
  """{split: images per class}; a handful under --smoke."""
  if _SMOKE.value:
    return {'train': 8, 'test': 4}
  return {'train': _TRAIN_PER_CLASS.value, 'test': _TEST_PER_CLASS.value}


def _write_folder(folder):
  """PNG files of --classes from CIFAR-10's test split: train/ first, then test/."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder('cifar10', data_dir=_DATA_DIR.value)
  builder.download_and_prepare()
  names = builder.info.features['label'].names
  unknown = set(_CLASSES.value) - set(names)
  if unknown:
    sys.exit(f'error: --classes: not CIFAR-10 classes: {", ".join(sorted(unknown))}')
  data = tfds.as_numpy(builder.as_dataset(split='test', batch_size=-1))
  images, labels = data['image'], data['label']
  counts = _per_class()
  for name in _CLASSES.value:
    chosen = np.flatnonzero(labels == names.index(name))
    start = 0
    for split, count in counts.items():
      if start + count > len(chosen):
        sys.exit(f'error: CIFAR-10\'s test split has {len(chosen)} {name} images, fewer than '
                 f'{sum(counts.values())}')
      os.makedirs(os.path.join(folder, split, name))
      for index in chosen[start:start + count]:
        Image.fromarray(images[index]).save(os.path.join(folder, split, name,
                                                         f'{index:05d}.png'))
      start += count


def _folder_runs(work_dir, folder, source):
  rows = [('from scratch', [])] + [('--init_from', [f'--init_from={source}'])] + [
      (f'--init_from {variant}', [f'--init_from={source}', *variant.split()])
      for variant in _VARIANTS.value]
  accuracies = {name: [] for name, _ in rows}
  for seed in _SEEDS.value:
    for index, (name, extra) in enumerate(rows):
      model_dir = os.path.join(work_dir, 'runs', f'{index}_seed{seed}')
      shutil.rmtree(model_dir, ignore_errors=True)  # A fresh run, never a resumed one.
      args = ['--dataset=image_folder', f'--data_dir={folder}', f'--model_dir={model_dir}',
              f'--seed={seed}', f'--batch_size={_BATCH.value}', '--checkpoint_every_steps=0',
              *(['--train_steps=5'] if _SMOKE.value else [f'--epochs={_EPOCHS.value}']), *extra]
      _run(args)
      accuracy = measure.record(model_dir)['eval_accuracy']
      accuracies[name].append(accuracy)
      print(f'seed {seed}  {name:<44} test accuracy {accuracy:.4f}', flush=True)
  return accuracies


def main(argv):
  del argv
  if _FOLDER_CHILD.value:
    _write_folder(_FOLDER_CHILD.value)
    return
  work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix='fine_tuning_')
  source = _source_run(work_dir)
  folder = os.path.join(work_dir, 'folder')
  shutil.rmtree(folder, ignore_errors=True)
  # In a process of its own: this one runs no TensorFlow op, so that the runs it starts can be
  # forked from it (tests/benchmark_smoke.py).
  _run([f'--write_folder_child={folder}', f'--classes={",".join(_CLASSES.value)}',
        f'--train_per_class={_TRAIN_PER_CLASS.value}', f'--test_per_class={_TEST_PER_CLASS.value}',
        f'--smoke={_SMOKE.value}', *([f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else [])],
       'benchmarks.fine_tuning')
  accuracies = _folder_runs(work_dir, folder, source)
  counts = _per_class()
  budget = '5 steps' if _SMOKE.value else f'{_EPOCHS.value} epochs'
  classes = len(_CLASSES.value)
  print(f'\n{classes} classes ({", ".join(_CLASSES.value)}), {counts["train"] * classes} '
        f'training and {counts["test"] * classes} test images from CIFAR-10\'s test split; '
        f'{budget} at batch {_BATCH.value} each; seeds {", ".join(_SEEDS.value)}')
  print(f'{"run":<44}{"median":>8}{"min":>8}{"max":>8}   each seed')
  for name, values in accuracies.items():
    print(f'{name:<44}{statistics.median(values):>8.4f}{min(values):>8.4f}{max(values):>8.4f}'
          f'   {" ".join(f"{v:.4f}" for v in values)}')
  if _SMOKE.value:
    print('SMOKE: figures meaningless')


if __name__ == '__main__':
  app.run(main)
