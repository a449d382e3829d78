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


def test_time_to_accuracy_benchmark_smoke(cifar_dir):
  result = forked.run(
      [sys.executable, '-m', 'tests.benchmark_smoke', 'benchmarks.time_to_accuracy', '--smoke',
       f'--data_dir={cifar_dir}'], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [l for l in result.stdout.splitlines()
          if l.startswith(('tutorial code', 'trainer --flagfile'))]
  assert [r.split('  ')[0] for r in rows] == [
      'tutorial code (model.fit)', 'trainer --flagfile=configs/tutorial.cfg',
      'trainer --flagfile=configs/fast.cfg']
  for row in rows:
    accuracy = float(row.split()[-4])
    assert 0.0 <= accuracy <= 1.0


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
