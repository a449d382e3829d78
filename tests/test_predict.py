"""trainer.predict on folders of mixed files, as a user runs it: a line per file, errors
named, exit codes, JSON Lines and CSV, globs and other file systems, the pixel limit.

The export here has random weights: what is checked is that every file gets the figures
the export's own signatures give it, not what a trained model predicts (tests/
test_serving_export.py compares a trained run's with trainer.evaluate)."""

import csv
import json
import logging
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import forked
from tests import image_files
from tests.conftest import REPO
from trainer.core.errors import EXIT_SOME_FAILED, EXIT_USER_ERROR, UserError
from trainer.model import cnn
from trainer.model import export as export_lib
from trainer.prediction import exports
from trainer.prediction import job
from trainer.prediction import writers

CLASSES = ('cat', 'dog', 'owl')
MAX_PIXELS = 100_000  # Small, so that an over-limit file is cheap to make.


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('predict') / 'export'
  model = cnn.create_model((16, 16, 3), len(CLASSES))
  export_lib.export_saved_model(model, CLASSES, str(folder), max_pixels=MAX_PIXELS)
  return str(folder)


def _write(path: pathlib.Path, data: bytes) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)
  return str(path)


@pytest.fixture
def mixed(tmp_path):
  """(folder, good files, {bad file: what its error line says}); nested class folders."""
  root = tmp_path / 'photos'
  good = [_write(root / 'cat' / 'a.png', image_files.encode('PNG', (20, 30))),
          _write(root / 'cat' / 'deep' / 'b.jpg', image_files.encode('JPEG', (40, 40), seed=1)),
          _write(root / 'cat' / 'c.GIF', image_files.encode('GIF', (16, 16), 'L', seed=2)),
          _write(root / 'dog' / 'd.bmp', image_files.encode('BMP', (9, 13), seed=3)),
          _write(root / 'dog' / 'e.webp', image_files.encode('WEBP', (30, 10), seed=4)),
          _write(root / 'owl' / 'f.png', image_files.encode('PNG', (16, 16), 'RGBA', seed=5))]
  jpeg = image_files.encode('JPEG', (50, 50), seed=6)
  bad = {_write(root / 'cat' / 'empty.png', b''): 'an empty file',
         _write(root / 'dog' / 'cut.jpg', jpeg[:len(jpeg) // 2]): 'a damaged image',
         _write(root / 'dog' / 'header.png', image_files.encode('PNG')[:20]): 'truncated',
         _write(root / 'owl' / 'big.png', image_files.encode('PNG', (400, 300), 'L')):
             'declares 300 x 400 pixels, over the limit of 100,000 pixels',
         _write(root / 'owl' / 'text.jpg', b'not a picture'): 'not an image file'}
  _write(root / 'owl' / 'notes.txt', b'a stray file')  # Skipped: no image extension.
  _write(root / 'owl' / '.hidden.png', b'')  # Hidden: never listed.
  return str(root), good, bad


def _predict(*args, fresh=False):
  """`python -m trainer.predict ARGS`; `fresh`: in a process of its own, to see the console
  exactly (a forked one shows TensorFlow's device probe unformatted: tests/forked.py)."""
  command = [sys.executable, '-m', 'trainer.predict', *args]
  options = dict(cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                 text=True, timeout=300)
  if fresh:
    return subprocess.run(command, check=False, **options)
  return forked.run(command, **options)


def _served(export_dir, paths):
  """What the export's serving_bytes signature returns for the files."""
  loaded = tf.saved_model.load(export_dir)
  data = [pathlib.Path(p).read_bytes() for p in paths]
  return loaded.signatures[export_lib.BYTES_SIGNATURE](image_bytes=tf.constant(data))


@pytest.mark.slow
def test_every_file_gets_a_line_and_the_bad_ones_their_reason(export_dir, mixed):
  root, good, bad = mixed
  result = _predict(f'--model={export_dir}', root, '--batch_size=2', fresh=True)
  assert result.returncode == EXIT_SOME_FAILED, result.stderr[-3000:]
  lines = [line.split('\t') for line in result.stdout.splitlines()]
  assert [line[0] for line in lines] == sorted(good)
  served = _served(export_dir, sorted(good))
  assert [line[1] for line in lines] == [n.decode() for n in served['class_name'].numpy()]
  assert [line[2] for line in lines] == [
      f'{p:.3f}' for p in served['probabilities'].numpy().max(axis=1)]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == len(bad)
  for path, reason in bad.items():
    assert any(line.startswith(f'error: {path}: ') and reason in line for line in errors), path
  summary = result.stderr.strip().splitlines()[-1]
  assert f'classified {len(good)} files' in summary
  assert f'{len(bad)} could not be classified' in summary and '1 other files' in summary
  # As clean as training's console: no TensorFlow start-up lines, library noise or traces.
  # (A progress line comes on a machine slow enough to take 10 s.)
  noise = [line for line in result.stderr.splitlines()
           if not line.startswith('error: ') and 'classified' not in line
           and not re.match(r'^\d\d:\d\d:\d\d  \d+/\d+ files  \d+ files/s  ETA ', line)]
  assert not noise, noise


@pytest.mark.slow
def test_json_lines_name_every_file_with_its_top_k(export_dir, mixed, tmp_path):
  root, good, bad = mixed
  out = tmp_path / 'predictions.jsonl'
  result = _predict(f'--model={export_dir}', root, '--top_k=3', f'--output={out}')
  assert result.returncode == EXIT_SOME_FAILED, result.stderr[-3000:]
  assert result.stdout == ''  # Every line went to the file.
  entries = [json.loads(line) for line in out.read_text().splitlines()]
  assert sorted(e['instance']['path'] for e in entries) == sorted(good + list(bad))
  served = _served(export_dir, sorted(good))
  predictions = {e['instance']['path']: e['prediction'] for e in entries if 'prediction' in e}
  for i, path in enumerate(sorted(good)):
    prediction = predictions[path]
    want = served['probabilities'].numpy()[i]
    np.testing.assert_allclose(prediction['probabilities'], want, rtol=1e-5, atol=1e-7)
    assert prediction['class_name'] == served['class_name'].numpy()[i].decode()
    top = prediction['top_k']
    assert len(top) == 3 and [t['class_name'] for t in top] == [
        CLASSES[j] for j in np.argsort(-want, kind='stable')]
    assert top[0]['class_id'] == prediction['class_id']
  failures = {e['instance']['path']: e['error'] for e in entries if 'error' in e}
  assert set(failures) == set(bad)
  for path, reason in bad.items():
    assert failures[path]['status'] == 'INVALID_ARGUMENT' and reason in failures[path]['message']


def test_csv_has_a_header_and_a_row_per_file(export_dir, mixed, tmp_path):
  root, good, bad = mixed
  out = tmp_path / 'predictions.csv'
  export = exports.load(export_dir)
  summary = job.run(export, [root], job.Options(top_k=2, output=str(out)))
  assert (summary.classified, summary.failed, summary.skipped) == (len(good), len(bad), 1)
  rows = list(csv.DictReader(out.open()))
  assert list(rows[0]) == ['path', 'class_name', 'probability', 'class_name_2',
                           'probability_2', 'error']
  by_path = {row['path']: row for row in rows}
  assert set(by_path) == set(good) | set(bad)
  for path in good:
    row = by_path[path]
    assert row['error'] == '' and float(row['probability']) >= float(row['probability_2'])
  for path, reason in bad.items():
    assert reason in by_path[path]['error'] and by_path[path]['class_name'] == ''


def test_files_globs_and_folders_each_file_once_and_missing_ones_named(export_dir, mixed,
                                                                        capsys):
  root, good, _ = mixed
  export = exports.load(export_dir)
  missing = os.path.join(root, 'nowhere.png')
  summary = job.run(export, [good[0], os.path.join(root, 'cat'), os.path.join(root, '*', '*.bmp'),
                             missing, os.path.join(root, 'zz*')], job.Options())
  printed = capsys.readouterr()
  paths = [line.split('\t')[0] for line in printed.out.splitlines()]
  cat_good = sorted(p for p in good if '/cat/' in p)
  assert paths == [good[0]] + [p for p in cat_good if p != good[0]] + [
      p for p in good if p.endswith('.bmp')]
  assert f'error: {missing}: no such file or folder' in printed.err
  assert 'zz*: matches no file' in printed.err
  assert summary.failed == 3  # The missing file, the empty glob, cat/empty.png.


def test_a_bucket_prefix_on_another_file_system(export_dir, mixed):
  """gs:// goes through tf.io.gfile like any file system; TensorFlow's in-memory ram://
  one stands in for a bucket here."""
  _, good, _ = mixed
  prefix = 'ram://uploads/2026'
  for i, path in enumerate(good):
    tf.io.gfile.makedirs(f'{prefix}/day{i % 2}')
    tf.io.gfile.copy(path, f'{prefix}/day{i % 2}/{os.path.basename(path)}', overwrite=True)
  export = exports.load(export_dir)
  summary = job.run(export, [prefix], job.Options(batch_size=4))
  assert (summary.classified, summary.failed) == (len(good), 0)


def test_folder_labels_score_against_the_class_folders(export_dir, mixed):
  root, good, bad = mixed
  export = exports.load(export_dir)
  summary = job.run(export, [root], job.Options(folder_labels=True))
  served = _served(export_dir, sorted(good))
  labels = [CLASSES.index(pathlib.Path(p).relative_to(root).parts[0]) for p in sorted(good)]
  counts = np.zeros((3, 3), np.int64)
  np.add.at(counts, (labels, served['class_id'].numpy()), 1)
  np.testing.assert_array_equal(summary.confusion, counts)
  assert summary.accuracy == pytest.approx(np.trace(counts) / len(good))
  assert summary.failed == len(bad)
  lines = job.confusion_lines(counts, CLASSES)
  assert lines[0].split()[-4:] == ['cat', 'dog', 'owl', 'accuracy'] and len(lines) == 4


def test_folder_labels_need_class_folders_the_export_knows(export_dir, mixed, tmp_path):
  root, good, _ = mixed
  export = exports.load(export_dir)
  with pytest.raises(UserError, match='not in a class folder'):
    job.run(export, [os.path.join(root, 'cat')], job.Options(folder_labels=True))
  _write(tmp_path / 'other' / 'emu' / 'x.png', image_files.encode('PNG'))
  with pytest.raises(UserError, match='class folder.s. emu are not classes of the export'):
    job.run(export, [str(tmp_path / 'other')], job.Options(folder_labels=True))
  with pytest.raises(UserError, match='takes folders of class folders'):
    job.run(export, [good[0]], job.Options(folder_labels=True))


def test_the_export_limit_applies_and_a_flag_overrides_it(export_dir, mixed):
  root, _, bad = mixed
  big = next(path for path in bad if path.endswith('big.png'))
  assert exports.load(export_dir).max_pixels == MAX_PIXELS
  summary = job.run(exports.load(export_dir, max_pixels=200_000), [big], job.Options())
  assert (summary.classified, summary.failed) == (1, 0)


def test_serving_bytes_refuses_a_request_with_a_file_over_the_limit(export_dir, mixed):
  _, good, bad = mixed
  big = next(path for path in bad if path.endswith('big.png'))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'image 1: declares 300 x 400 pixels, over the limit of 100,000'):
    _served(export_dir, [good[0], big])
  with pytest.raises(tf.errors.InvalidArgumentError, match='image 0: an empty file'):
    _served(export_dir, [next(p for p in bad if p.endswith('empty.png'))])
  # Ordinary files: the same as decoding them as training does and sending serving_default.
  export = exports.load(export_dir)
  from trainer.prediction import reading  # pylint: disable=g-import-not-at-top
  images = np.stack([reading.diagnose(p, export.image_shape, MAX_PIXELS)[0] for p in good])
  np.testing.assert_allclose(_served(export_dir, good)['probabilities'].numpy(),
                             export.classify(images).numpy(), rtol=1e-6, atol=1e-7)


def test_an_export_from_before_the_limit_and_class_list_loads(export_dir, mixed, tmp_path):
  _, good, _ = mixed
  model = cnn.create_model((16, 16, 3), len(CLASSES))
  module = export_lib._Serving(model, CLASSES, False)  # pylint: disable=protected-access
  del module.classes, module.max_pixels  # What exports held before: neither.
  export_lib.save(module, str(tmp_path / 'old'), {'serving_default': module.serve})
  old = exports.load(str(tmp_path / 'old'))
  assert old.class_names == CLASSES and not old.declares_limit
  assert old.max_pixels == 50_000_000
  summary = job.run(old, good, job.Options())
  assert (summary.classified, summary.failed) == (len(good), 0)


def test_a_progress_line_with_an_eta_on_a_long_job(export_dir, mixed, caplog):
  _, good, _ = mixed
  ticks = iter(range(0, 10_000, 11))  # Every look at the clock: 11 s later.
  with caplog.at_level(logging.INFO, logger='trainer'):
    job.run(exports.load(export_dir), good, job.Options(batch_size=1),
            clock=lambda: next(ticks))
  lines = [r.getMessage() for r in caplog.records if 'files/s' in r.getMessage()]
  assert lines and lines[0].startswith('2/6 files') and 'ETA ' in lines[0]


@pytest.mark.parametrize('args,message', [
    ([], 'nothing to classify'),
    (['--top_k=4', 'x.png'], '--top_k must be between 1 and the export\'s 3 classes'),
    (['--batch_size=0', 'x.png'], '--batch_size must be positive'),
    (['--output=out.txt', 'x.png'], 'name a .jsonl (JSON Lines) or .csv file'),
    (['--output=/no/such/folder/out.csv', 'x.png'], 'cannot write --output=/no/such/folder'),
])
def test_bad_flags_exit_2_with_one_line(export_dir, mixed, args, message):
  root, _, _ = mixed
  result = _predict(f'--model={export_dir}', *[a.replace('x.png', root) for a in args])
  assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last and 'Traceback' not in result.stderr


def test_a_folder_without_an_export_is_one_line(tmp_path):
  result = _predict(f'--model={tmp_path}', str(tmp_path))
  assert result.returncode == EXIT_USER_ERROR
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'error: --model={tmp_path} is neither an export (no saved_model.pb in it) nor a run')


def test_the_top_k_are_the_highest_first():
  assert writers.top(np.array([0.1, 0.5, 0.2, 0.2]), 3) == [1, 2, 3]
