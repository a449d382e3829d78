"""trainer.predict in bulk, and the pixel limit of serving_bytes: time and memory.

    python -m benchmarks.batch_prediction [--files=1000,10000] [--work_dir=DIR]

In DIR (a temporary folder by default) it writes image folders of the given sizes (PNG,
JPEG, GIF, BMP of 24 to 160 pixels a side, in nested folders), trains a one-epoch run on a
small training split, then measures, each command a process of its own:
  - `trainer.predict` on each folder with about 2% corrupt, cut and empty files mixed in:
    wall time and peak resident memory (the figure that must not grow with the files);
  - `trainer.predict --folder_labels` against `trainer.evaluate` on the same clean test
    split of the largest size: wall time each, and the accuracy each reports;
  - the export's serving_bytes on a 20,000 x 20,000 grey PNG (a few hundred KB): the time
    to refuse it and the extra peak memory, and what decoding it costs without the limit.
Prints one JSON object.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

_CLASSES = ('cat', 'dog', 'owl')
_FORMATS = ('png', 'jpg', 'gif', 'bmp')


def _write_images(folder: str, count: int, seed: int, broken_share: float = 0.0) -> int:
  """`count` files in folder/<class>/<batch>/..., a share of them broken; returns how many."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  broken = 0
  for i in range(count):
    label = i % len(_CLASSES)
    sub = os.path.join(folder, _CLASSES[label], f'part{i // 500:03d}')
    os.makedirs(sub, exist_ok=True)
    fmt = _FORMATS[i % len(_FORMATS)]
    path = os.path.join(sub, f'{i:06d}.{fmt}')
    if rng.random() < broken_share:
      broken += 1
      with open(path, 'wb') as f:  # Empty, or the start of a real file.
        f.write(b'' if broken % 3 == 0 else bytes(rng.integers(0, 256, 64, dtype=np.uint8)))
      continue
    height, width = (int(v) for v in rng.integers(24, 161, 2))
    colour = np.array([60 + 70 * label, 200 - 60 * label, 40 + 90 * (label % 2)])
    pixels = np.clip(colour + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
  return broken


def _run(args, cwd):
  """(seconds, peak RSS in MB, exit code, stdout, stderr) of `python -m ARGS`, a process of
  its own (its resource usage read when it is reaped)."""
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, '-m', *args], cwd=cwd, stdout=out, stderr=err,
                               text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    return seconds, usage.ru_maxrss / 1024, process.returncode, out.read(), err.read()


def _refusal(export_dir: str) -> dict:
  """serving_bytes on the 20,000 x 20,000 PNG, in this process: seconds and extra peak MB."""
  import resource  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests import image_files  # pylint: disable=g-import-not-at-top
  bomb = image_files.png_bomb(20000)
  serve = tf.saved_model.load(export_dir).signatures['serving_bytes']
  ordinary = tf.constant([image_files.encode('PNG', (40, 30))])
  serve(image_bytes=ordinary)  # Traced and warm.
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  start = time.perf_counter()
  try:
    serve(image_bytes=tf.constant([bomb]))
    message = 'not refused'
  except tf.errors.InvalidArgumentError as e:
    message = e.message.splitlines()[-1] if 'assertion' not in e.message else re.search(
        r'assertion failed: \[(.*?)\]', e.message).group(1)
  seconds = time.perf_counter() - start
  extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
  return {'file_kb': len(bomb) // 1024, 'refused_in_ms': round(seconds * 1000, 2),
          'extra_peak_mb': round(extra, 1), 'error': message}


_UNLIMITED = '''
import resource, time, tensorflow as tf
from tests import image_files
from trainer.data import image_folder
data = tf.constant(image_files.png_bomb(20000))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
image_folder.decode(data, (32, 32), 3).numpy()
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
'''


def measure(work_dir: str, sizes, unlimited: bool = True) -> dict:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  data = os.path.join(work_dir, 'data')
  largest = max(sizes)
  if not os.path.isdir(os.path.join(data, 'test')):
    _write_images(os.path.join(data, 'train'), 60, seed=1)
    _write_images(os.path.join(data, 'test'), largest, seed=2)
  run_dir = os.path.join(work_dir, 'run')
  if not os.path.isdir(os.path.join(run_dir, 'export')):
    seconds, _, code, _, err = _run(['trainer.main', '--dataset=image_folder',
                                     f'--data_dir={data}', '--image_size=32,32', '--epochs=1',
                                     '--batch_size=20', f'--model_dir={run_dir}'], repo)
    assert code == 0, err[-2000:]
  export_dir = os.path.join(run_dir, 'export')
  results = {'files': {}}
  for size in sizes:
    folder = os.path.join(work_dir, f'mixed_{size}')
    broken = _write_images(folder, size, seed=size, broken_share=0.02) \
        if not os.path.isdir(folder) else None
    seconds, peak, code, out, err = _run(['trainer.predict', f'--model={export_dir}', folder,
                                          f'--output={folder}.jsonl'], repo)
    summary = err.strip().splitlines()[-1]
    results['files'][size] = {'seconds': round(seconds, 1), 'peak_rss_mb': round(peak),
                              'exit_code': code, 'broken': broken, 'summary': summary}
  test = os.path.join(data, 'test')
  seconds, peak, code, _, err = _run(['trainer.evaluate', f'--model_dir={run_dir}',
                                      f'--data_dir={data}'], repo)
  assert code == 0, err[-2000:]
  evaluated = json.load(open(max((os.path.join(run_dir, n) for n in os.listdir(run_dir)
                                  if n.startswith('eval_test_')), key=os.path.getmtime)))
  p_seconds, p_peak, p_code, _, p_err = _run(['trainer.predict', f'--model={export_dir}',
                                              '--folder_labels', test,
                                              f'--output={work_dir}/labelled.csv'], repo)
  assert p_code == 0, p_err[-2000:]
  accuracy = float(re.search(r'accuracy ([\d.]+) against', p_err).group(1))
  results['labelled'] = {
      'images': largest, 'evaluate_seconds': round(seconds, 1), 'evaluate_peak_rss_mb':
      round(peak), 'predict_seconds': round(p_seconds, 1), 'predict_peak_rss_mb': round(p_peak),
      'predict_over_evaluate_time': round(p_seconds / seconds, 2),
      'evaluate_accuracy': evaluated['eval_accuracy'], 'predict_accuracy': accuracy}
  results['pixel_limit'] = _refusal(export_dir)
  if unlimited:
    out = subprocess.run([sys.executable, '-c', _UNLIMITED], cwd=repo, capture_output=True,
                         text=True, check=True).stdout.split()
    results['pixel_limit']['without_the_limit'] = {
        'decode_seconds': round(float(out[0]), 2), 'extra_peak_mb': round(float(out[1]))}
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--files', default='1000,10000', help='folder sizes, comma-separated')
  parser.add_argument('--work_dir', default='', help='where the images and the run go')
  parser.add_argument('--smoke', action='store_true', help='tiny folders; no unlimited decode')
  args = parser.parse_args()
  sizes = [30, 60] if args.smoke else [int(n) for n in args.files.split(',')]
  with tempfile.TemporaryDirectory() as scratch:
    print(json.dumps(measure(args.work_dir or scratch, sizes, unlimited=not args.smoke),
                     indent=1))


if __name__ == '__main__':
  main()
