"""The benchmark script runs (smoke mode), so that it cannot rot; real figures: README."""

import json
import sys

import pytest

from tests.conftest import REPO
from tests import forked

pytestmark = pytest.mark.slow


def test_throughput_benchmark_smoke(cifar_dir):
  result = forked.run(
      [sys.executable, '-m', 'tests.benchmark_smoke', 'benchmarks.throughput', '--smoke',
       '--repeats=1',
       f'--data_dir={cifar_dir}'], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  for row in ('1 limit', '2 tutorial model.fit'):
    line = next(l for l in out.splitlines() if l.startswith(row))
    images_per_second, peak_mb = (float(x) for x in line.split()[-2:])
    assert images_per_second > 0 and peak_mb > 100
  sent = {}
  for row in ('3 trainer --input=host', '4 trainer --input=device', '5 trainer, synthetic'):
    line = next(l for l in out.splitlines() if l.startswith(row))
    images_per_second, peak_mb, bytes_per_step, cpu_ms = (
        float(x.replace(',', '')) for x in line.split()[-4:])
    assert images_per_second > 0 and peak_mb > 100 and cpu_ms > 0
    sent[row[0]] = bytes_per_step
  # The host input sends each batch's float32 images and labels; the device input a step count.
  assert sent == {'3': 64 * (32 * 32 * 3 * 4 + 8), '4': 8, '5': 0}
  for ratio in ('3/1 ', '3/5 ', '4/1 ', '3/2 ', 'peak memory host/tutorial', 'device/host'):
    assert ratio in out


def test_time_to_target_benchmark_smoke(cifar_dir, tmp_path):
  result = forked.run(
      [sys.executable, '-m', 'tests.benchmark_smoke', 'benchmarks.time_to_target', '--smoke',
       '--batch_sizes=32,64', '--targets=0.15,0.65', '--seeds=3', '--jobs=2',
       f'--out={tmp_path}', f'--data_dir={cifar_dir}'], cwd=REPO, capture_output=True,
      text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((tmp_path / 'time_to_target.json').read_text())
  assert len(record['runs']) == 2 * 2 * 3
  rows = record['summary']
  assert [(r['target'], r['batch_size']) for r in rows] == [
      (0.15, 32), (0.15, 64), (0.65, 32), (0.65, 64)]
  for row in rows:
    mine = [r for r in record['runs']
            if (r['target'], r['batch_size']) == (row['target'], row['batch_size'])]
    assert row['seeds'] == 3 and row['reached'] == sum(r['reached'] for r in mine)
    for run in mine:  # A run stops at its target, or trains its 4 smoke steps.
      assert run['steps_trained'] == (run['steps'] if run['reached'] else 4)
  timing = record['timing']
  assert len(timing) == 1 and timing[0]['tutorial_wall_seconds'] > 0
  assert 'the tutorial\'s code' in result.stdout
  for picture in ('accuracy_curves.png', 'steps_to_target.png'):
    assert (tmp_path / picture).stat().st_size > 10_000


def test_time_to_target_summary():
  from benchmarks import summaries  # pylint: disable=g-import-not-at-top
  runs = [dict(target=0.65, batch_size=64, reached=True, steps=s, wall_seconds=1.0)
          for s in (400, 500, 600, 700)]
  runs += [dict(target=0.65, batch_size=512, reached=s is not None, steps=s, wall_seconds=1.0)
           for s in (50, 100, None)]
  runs += [dict(target=0.65, batch_size=4096, reached=s is not None, steps=s, wall_seconds=1.0)
           for s in (20, None, None)]
  small, middle, large = summaries.steps_to_target(runs)
  assert (small['median_steps'], small['olympic_mean_steps'], small['min_steps'],
          small['max_steps'], small['efficiency']) == (550, 550, 400, 700, 1.0)
  # An unreached seed counts as endless: the median of 50, 100 and never is 100.
  assert (middle['reached'], middle['median_steps'], middle['olympic_mean_steps']) == (2, 100, 75)
  assert middle['efficiency'] == 550 * 64 / (100 * 512)
  assert large['median_steps'] is None and large['efficiency'] is None


def test_fine_tuning_benchmark_smoke(cifar_dir, tmp_path):
  result = forked.run(
      [sys.executable, '-m', 'tests.benchmark_smoke', 'benchmarks.fine_tuning', '--smoke',
       '--seeds=1', f'--data_dir={cifar_dir}', f'--work_dir={tmp_path}'], cwd=REPO,
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = result.stdout.split('each seed\n', 1)[1].splitlines()
  assert [r[:44].strip() for r in rows[:3]] == [
      'from scratch', '--init_from', '--init_from --freeze=conv --freeze_epochs=5']
  for row in rows[:3]:
    assert 0.0 <= float(row.split()[-1]) <= 1.0
  # The folder holds CIFAR-10 test images only: 8 a class for training, 4 for testing.
  assert len(list((tmp_path / 'folder' / 'train' / 'cat').iterdir())) == 8
  assert len(list((tmp_path / 'folder' / 'test' / 'cat').iterdir())) == 4
  tuned = json.loads((tmp_path / 'runs' / '1_seed1' / 'config.json').read_text())
  assert tuned['initialized_from']['output_layer'] == 'new (10 -> 5 classes)'
