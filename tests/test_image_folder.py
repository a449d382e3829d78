"""--dataset=image_folder: the user's own images, read the way the rest of the trainer needs."""

import collections
import json
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, run_workers
from tests import forked
from tests import image_folders
from trainer.core.errors import UserError
from trainer.data import image_folder
from trainer.data import pipeline


@pytest.fixture
def folder(tmp_path):
  root = tmp_path / 'images'
  return root, image_folders.write(root)


def test_reads_each_image_once_converted_and_resized_to_the_first(folder):
  root, labels = folder
  source = image_folder.ImageFolderSource(str(root))
  info = source.info
  assert info.image_shape == image_folders.FIRST_SIZE + (3,)
  assert info.class_names == image_folders.CLASSES and info.num_classes == 2
  assert (info.num_train_examples, info.num_eval_examples) == (24, 10)
  for split, kind in (('train', 'train'), ('test', 'eval')):
    seen = {}
    for image, label in source.read(kind, 0, 1).as_numpy_iterator():
      assert image.dtype == np.uint8 and image.shape == info.image_shape
      assert (image == image[0, 0]).all()  # Grey, RGBA and every size became plain RGB.
      seen[image_folders.example_id(image[0, 0, 0] / 255)] = int(label)
    assert seen == labels[split]


def test_image_size_and_grey_first_image(tmp_path):
  root = tmp_path / 'grey'
  image_folders.write(root)
  first = sorted((root / 'train' / 'cat').iterdir())[0]
  first.unlink()
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.new('L', (3, 3), 50).save(first.with_suffix('.png'))
  source = image_folder.ImageFolderSource(str(root), image_size='6,7')
  assert source.info.image_shape == (6, 7, 1)  # The first image's channels, the given size.
  image, _ = next(source.read('train', 0, 1).skip(2).as_numpy_iterator())  # The RGBA one.
  assert image.shape == (6, 7, 1) and (image == image[0, 0]).all()


def test_trains_under_mirrored_each_example_once_per_epoch(folder, tmp_path, mirrored):
  root, labels = folder
  source = image_folder.ImageFolderSource(str(root))
  iterator = pipeline.distributed_train_iterator(mirrored, source, 8, 3, seed=1,
                                                 shuffle_buffer=1000)
  for _ in range(2):  # Two epochs of 3 steps, 2 replicas.
    seen = collections.Counter()
    for _ in range(3):
      images, batch_labels = next(iterator)
      for part, part_labels in zip(mirrored.experimental_local_results(images),
                                   mirrored.experimental_local_results(batch_labels)):
        ids = image_folders.ids(part)
        seen.update(ids.tolist())
        assert [labels['train'][i] for i in ids] == part_labels.numpy().tolist()
    assert seen == collections.Counter(list(labels['train']))  # Each once.
  # Training in a process of its own: collectives of earlier tests' MirroredStrategies in
  # this process keep their instance keys, and a model of another shape would collide.
  result = forked.run(
      [sys.executable, '-m', 'trainer.main', '--dataset=image_folder', f'--data_dir={root}',
       f'--model_dir={tmp_path / "run"}', '--strategy=mirrored', '--num_cpu_devices=2',
       '--batch_size=8', '--epochs=2', '--steps_per_loop=3'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert metrics['global_step'] == 6 and metrics['eval_examples'] == 10
  assert metrics['dataset'] == 'image_folder'
  assert set(metrics['per_class_accuracy']) == set(image_folders.CLASSES)
  assert '2 replica(s)' in result.stderr
  serve = tf.saved_model.load(str(tmp_path / 'run' / 'export')).signatures['serving_default']
  answer = serve(images=tf.zeros((1,) + image_folders.FIRST_SIZE + (3,), tf.uint8))
  assert answer['class_name'].numpy()[0].decode() in image_folders.CLASSES


def test_trains_on_two_workers_each_example_once(folder, tmp_path):
  root, labels = folder
  run_workers(lambda index: ['tests.image_folder_worker', str(root), str(tmp_path / 'run'),
                             str(tmp_path / f'w{index}.json')])
  reports = [json.loads((tmp_path / f'w{index}.json').read_text()) for index in range(2)]
  assert all(r['replicas'] == 2 and r['eval_examples'] == 10 and r['global_step'] == 6
             for r in reports)
  for epoch in range(2):
    seen = collections.Counter(i for r in reports for i in r['epochs'][epoch])
    assert seen == collections.Counter(list(labels['train']))  # The workers' shares: each once.
  assert set(reports[0]['epochs'][0]).isdisjoint(reports[1]['epochs'][0])


def _break(root, case):
  """Damages a written folder the way `case` says; returns what the error must name."""
  cat = root / 'train' / 'cat'
  if case == 'no_class_folders':
    for path in sorted(root.glob('test/*/*')):
      path.unlink()
    for path in root.glob('test/*'):
      path.rmdir()
    return f'{root / "test"} has no class folders'
  if case == 'empty_class_folder':
    for path in (root / 'test' / 'dog').iterdir():
      path.unlink()
    return f'class folder {root / "test" / "dog"} holds no images'
  if case == 'class_missing_from_test':
    (root / 'train' / 'bird').mkdir()
    (cat / '000.png').rename(root / 'train' / 'bird' / '000.png')
    return f'bird missing from {root / "test"}'
  if case == 'unreadable_file':
    (cat / 'gone.png').symlink_to(root / 'nowhere.png')
    return f'cannot read {cat / "gone.png"}'
  if case == 'not_an_image':
    (cat / 'notes.txt').write_text('labels were checked by hand\n')
    return f'{cat / "notes.txt"} is not an image file'
  data = (cat / '000.png').read_bytes()
  (cat / 'broken.png').write_bytes(data[:len(data) // 2])
  return f'{cat / "broken.png"} is a damaged image'


def _train(root, model_dir, *flags):
  return forked.run(
      [sys.executable, '-m', 'trainer.main', '--dataset=image_folder', f'--data_dir={root}',
       f'--model_dir={model_dir}', '--batch_size=8', '--train_steps=2', '--steps_per_loop=2',
       *flags], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize('case', ['no_class_folders', 'empty_class_folder',
                                  'class_missing_from_test', 'unreadable_file', 'not_an_image',
                                  'damaged_image'])
def test_a_bad_folder_stops_before_training_with_one_line(folder, tmp_path, case):
  root, _ = folder
  message = _break(root, case)
  result = _train(root, tmp_path / 'run')
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last, last
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'run' / 'checkpoints').exists()


@pytest.mark.slow
def test_skip_bad_images_leaves_damaged_ones_out_and_counts_them(folder, tmp_path):
  root, _ = folder
  _break(root, 'damaged_image')
  result = _train(root, tmp_path / 'run', '--skip_bad_images')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'skipped 1 damaged images in' in result.stderr
  assert '24 train and 10 test images' in result.stderr


def test_image_options_need_the_image_folder_data_set():
  with pytest.raises(UserError, match='only apply to --dataset=image_folder'):
    pipeline.create_source('synthetic', image_size='8,8')
  with pytest.raises(UserError, match='--image_size must be HEIGHT,WIDTH'):
    image_folder.parse_image_size('8x8')
  with pytest.raises(UserError, match='needs --data_dir'):
    image_folder.ImageFolderSource(None)
