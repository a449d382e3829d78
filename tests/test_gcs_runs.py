"""Runs whose data and run folder are on gs://, end to end, through TensorFlow's own GCS client
and the Cloud Storage stand-in (tests/gcs_stand_in.py): real processes as on a cloud VM."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests.gcs_stand_in import StandIn, skip_unless_root
from tests.gcs_store import BUCKET
from tests.process_output import Lines
from trainer.core.errors import EXIT_PREEMPTED
from trainer.run_folder import run_lock

pytestmark = pytest.mark.slow

DATA = f'gs://{BUCKET}/tfds'
RUNS = f'gs://{BUCKET}/runs'
# Real CIFAR-10 examples, a few of them: each run takes seconds.
EXAMPLES = {'train': 800, 'test': 200}
# Op determinism and checkpoints every 10 steps: 40 steps whose weights are exact.
EXACT = ['--train_steps=40', '--steps_per_loop=5', '--checkpoint_every_steps=10',
         '--batch_size=32', '--deterministic', '--augment=flip_shift']


def _small_cifar(source: str, target: str) -> None:
  """The first EXAMPLES of each split of the prepared CIFAR-10, as a TFDS data folder."""
  version = os.listdir(os.path.join(source, 'cifar10'))[0]
  source, target = (os.path.join(f, 'cifar10', version) for f in (source, target))
  os.makedirs(target)
  with open(os.path.join(source, 'dataset_info.json')) as f:
    info = json.load(f)
  for split in info['splits']:
    name = f'cifar10-{split["name"]}.tfrecord-00000-of-00001'
    count = EXAMPLES[split['name']]
    with tf.io.TFRecordWriter(os.path.join(target, name)) as writer:
      for record in tf.data.TFRecordDataset(os.path.join(source, name)).take(count):
        writer.write(record.numpy())
    split['shardLengths'] = [str(count)]
    split['numBytes'] = str(os.path.getsize(os.path.join(target, name)))
  with open(os.path.join(target, 'dataset_info.json'), 'w') as f:
    json.dump(info, f)
  for name in ('features.json', 'label.labels.txt'):
    with open(os.path.join(source, name), 'rb') as f, open(os.path.join(target, name), 'wb') as g:
      g.write(f.read())


# Session-scoped: once per test process, even where other tests come between their users.
@pytest.fixture(scope='session')
def local_data(tmp_path_factory, cifar_dir):
  folder = str(tmp_path_factory.mktemp('tfds'))
  _small_cifar(cifar_dir, folder)
  return folder


@pytest.fixture(scope='session')
def bucket(tmp_path_factory, local_data):
  """A stand-in shared by this module's tests, with the data in gs://trainer-test/tfds."""
  skip_unless_root()
  stand_in = StandIn(str(tmp_path_factory.mktemp('gcs')))
  stand_in.store.copy_in(local_data, DATA)
  yield stand_in
  stand_in.close()


def _main(model_dir, *extra, data_dir=DATA):
  return [sys.executable, '-m', 'trainer.main', '--dataset=cifar10', f'--data_dir={data_dir}',
          f'--model_dir={model_dir}', *extra]


def _run(bucket, command, job='', code=0):
  result = bucket.run(command, cwd=REPO, capture_output=True, text=True, timeout=400,
                      env=dict(os.environ, TRAINER_JOB_ID=job))
  assert result.returncode == code, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  return result.stderr


def _start(bucket, command, job=''):
  process = bucket.popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, TRAINER_JOB_ID=job))
  return process, Lines(process.stderr)


def _variables(checkpoint):
  reader = tf.train.load_checkpoint(checkpoint)
  return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(checkpoint)}


def _tfds_images(data_dir, count):
  """The first `count` test images of the data folder, as PNG files' bytes."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  examples = tfds.load('cifar10', split=f'test[:{count}]', data_dir=data_dir, download=False)
  return [tf.io.encode_png(example['image']).numpy() for example in examples]


def _in_use(output, folder):
  errors = [line for line in output.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and errors[0].startswith(
      f'error: the run folder {folder} is in use by another run (host '), output[-3000:]


def test_a_gs_run_stopped_refused_killed_and_taken_over_ends_as_an_uninterrupted_local_run(
    bucket, local_data, tmp_path):
  _run(bucket, _main(tmp_path / 'straight', *EXACT, data_dir=local_data))
  folder = f'{RUNS}/interrupted'

  # SIGTERM: saves on gs:// and exits restartably. Meanwhile another job is refused.
  process, lines = _start(bucket, _main(folder, *EXACT), job='job-1')
  try:
    lines.wait_for(r'step 10/40', timeout=300)
    _in_use(_run(bucket, _main(folder, *EXACT), job='job-2', code=2), folder)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == EXIT_PREEMPTED, lines.rest()[-3000:]
  finally:
    process.kill()
    process.wait()
  last = lines.rest().strip().splitlines()[-1]
  assert last.startswith('stopped: preempted: checkpoint saved at step '), last
  stopped_at = int(last.split('step ')[1].split(';')[0])
  assert bucket.store.get(f'{folder}/{run_lock.LEASE_FILE}') is None  # Released.

  # SIGKILL after the next checkpoint: its lease stays behind, live for another job.
  process, lines = _start(bucket, _main(folder, *EXACT), job='job-1')
  try:
    lines.wait_for(f'resumed from step {stopped_at}', timeout=300)
    lines.wait_for(r'saved checkpoint \S+/ckpt-', timeout=300)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  lease_path = f'{folder}/{run_lock.LEASE_FILE}'
  _in_use(_run(bucket, _main(folder, *EXACT), job='job-2', code=2), folder)

  # Time passes: the dead holder's lease goes stale, and the next run takes it over.
  lease = json.loads(bucket.store.get(lease_path))
  lease['renewed'] -= run_lock.LEASE_STALE_SECONDS + 60
  bucket.store.put(BUCKET, lease_path[len(f'gs://{BUCKET}/'):], json.dumps(lease).encode())
  output = _run(bucket, _main(folder, *EXACT), job='job-2')
  assert 'taking over the run folder lease of host ' in output
  assert re.search(r'resumed from step [1-9]\d*', output), output[-3000:]
  assert bucket.store.get(lease_path) is None

  bucket.store.copy_out(f'{folder}/checkpoints', str(tmp_path / 'from_gs'))
  # Everything but the count of saves, which the preemption's own save adds to.
  straight, resumed = ({name: value for name, value in _variables(str(path)).items()
                        if not name.startswith('save_counter')} for path in (
                            tmp_path / 'straight' / 'checkpoints' / 'ckpt-40',
                            tmp_path / 'from_gs' / 'ckpt-40'))
  assert straight.keys() == resumed.keys()
  for name, value in straight.items():
    np.testing.assert_array_equal(value, resumed[name], err_msg=name)


def _train_watched(bucket):
  """A run trained on gs:// with `trainer.evaluate --watch` beside it: (folder, the
  trainer's output, the watcher's stdout)."""
  folder = f'{RUNS}/finished'
  trainer, lines = _start(bucket, _main(folder, '--train_steps=30', '--steps_per_loop=5',
                                        '--checkpoint_every_steps=10', '--batch_size=32'))
  watcher = bucket.popen([sys.executable, '-m', 'trainer.evaluate', f'--model_dir={folder}',
                          '--watch', '--poll_seconds=0.2', '--watch_timeout=300'],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    watched, watch_log = watcher.communicate(timeout=400)
    trainer.wait(timeout=300)
  finally:
    for process in (trainer, watcher):
      process.kill()
      process.wait()
  output = lines.rest()
  assert trainer.returncode == 0, output[-3000:]
  assert watcher.returncode == 0 and 'Traceback' not in watch_log, watch_log[-3000:]
  return folder, output, watched


def _json(bucket, path):
  return json.loads(bucket.store.get(path))


def _check_watch(bucket, finished):
  """--watch evaluated the run's checkpoints as they came, the last one last."""
  folder, output, watched = finished
  saved = {int(s) for s in re.findall(r'saved checkpoint \S+/ckpt-(\d+)', output)}
  evaluated = [int(step) for step in re.findall(r'^step (\d+)  test  loss', watched, re.M)]
  assert evaluated == sorted(set(evaluated)) and evaluated[-1] == 30, watched
  assert set(evaluated) <= saved
  final = _json(bucket, f'{folder}/results.json')
  last = _json(bucket, f'{folder}/eval_test_30.json')
  assert last['eval_accuracy'] == pytest.approx(final['eval_accuracy'], abs=1e-6)


def _check_evaluate(bucket, finished):
  """trainer.evaluate reads the run and its data from gs://: latest and best."""
  folder, output, _ = finished
  best = re.findall(r'new best eval accuracy (\S+) at step (\d+)', output)[-1]
  for checkpoint, step, accuracy in (
      ('latest', 30, _json(bucket, f'{folder}/results.json')['eval_accuracy']),
      ('best', int(best[1]), float(best[0]))):
    result = bucket.run([sys.executable, '-m', 'trainer.evaluate', f'--model_dir={folder}',
                         f'--checkpoint={checkpoint}'], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(rf'^step {step}  test  loss \S+  accuracy (\S+)', result.stdout, re.M)
    assert found, result.stdout + result.stderr[-3000:]
    assert float(found.group(1)) == pytest.approx(accuracy, abs=1e-4)


def _check_export_and_predict(bucket, finished, local_data, tmp_path):
  """The export swapped in on gs:// serves trainer.predict of images on gs://."""
  folder, _, _ = finished
  assert not bucket.store.names(f'{folder}/export.tmp')  # Swapped in, nothing left over.
  images = _tfds_images(local_data, 3)
  paths = [f'gs://{BUCKET}/images/{i}.png' for i in range(len(images))]
  for path, data in zip(paths, images):
    bucket.store.put(BUCKET, path[len(f'gs://{BUCKET}/'):], data)
  printed = bucket.run([sys.executable, '-m', 'trainer.predict', f'--model={folder}/export',
                        *paths], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert printed.returncode == 0, printed.stderr[-3000:]
  # The same export, read from local disk in this process.
  bucket.store.copy_out(f'{folder}/export', str(tmp_path / 'export'))
  serve = tf.saved_model.load(str(tmp_path / 'export')).signatures['serving_bytes']
  want = serve(image_bytes=tf.constant(images))
  expected = [f'{path}\t{name.decode()}\t{max(row):.3f}' for path, name, row in
              zip(paths, want['class_name'].numpy(), want['probabilities'].numpy())]
  assert printed.stdout.splitlines() == expected


def _check_init_from(bucket, finished):
  """--init_from=gs://<the run> starts a new run from its weights."""
  folder, _, _ = finished
  child = f'{RUNS}/child'
  output = _run(bucket, _main(child, f'--init_from={folder}', '--train_steps=5',
                              '--steps_per_loop=5', '--batch_size=32'))
  assert f'initialized from {folder}/' in output, output[-3000:]
  assert _json(bucket, f'{child}/config.json')['initialized_from']['path'].startswith(folder)


def test_a_finished_run_on_gs_is_watched_evaluated_served_and_initialized_from(
    bucket, local_data, tmp_path):
  # One test: these checks share one run, and every test process would train its own.
  finished = _train_watched(bucket)
  _check_watch(bucket, finished)
  _check_evaluate(bucket, finished)
  _check_export_and_predict(bucket, finished, local_data, tmp_path)
  _check_init_from(bucket, finished)


def test_two_runs_started_together_on_one_gs_folder_one_trains_the_other_stops(bucket):
  # The tight race, many times over, is tests/test_gcs_lease.py's; here, whole runs.
  folder = f'{RUNS}/together'
  command = _main(folder, '--train_steps=5', '--steps_per_loop=5', '--batch_size=32')
  started = [_start(bucket, command, job=job) for job in ('job-1', 'job-2')]
  try:
    codes = [process.wait(timeout=300) for process, _ in started]
  finally:
    for process, _ in started:
      process.kill()
      process.wait()
  outputs = [lines.rest() for _, lines in started]
  assert sorted(codes) == [0, 2], outputs
  _in_use(outputs[codes.index(2)], folder)
  assert _json(bucket, f'{folder}/results.json')['global_step'] == 5


def test_the_doctor_probes_gs_folders_leaves_nothing_and_names_a_missing_bucket(bucket):
  new = f'{RUNS}/doctor-new'
  result = bucket.run([sys.executable, '-m', 'trainer.doctor', f'--model_dir={new}',
                       '--tensorboard_dir=gs://no-such-bucket/tb', f'--data_dir={DATA}',
                       '--dataset=cifar10', '--batch_size=32'],
                      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stdout + result.stderr[-3000:]
  checks = [line.split(None, 2) for line in result.stdout.splitlines()]
  assert [c for c in checks if c[1] == 'run_folder'] == [
      ['ok', 'run_folder', f'the run folder (--model_dir) {new} takes a write (probe file '
       'written, read back and deleted)'],
      ['FAIL', 'run_folder', 'cannot write to the TensorBoard folder (--tensorboard_dir) '
       'gs://no-such-bucket/tb: the bucket gs://no-such-bucket does not exist; choose a folder '
       'this process may create and write']], result.stdout
  assert [c for c in checks if c[1] == 'data'] == [
      ['ok', 'data', f'data folder {DATA} exists, 1 entries, writable']], result.stdout
  assert [c[0] for c in checks if c[1] == 'doctor'] == ['FAIL']
  assert bucket.store.names(new) == []  # The probes left no file or folder behind.


def test_a_run_in_a_missing_bucket_is_one_line_not_a_hang(bucket):
  # tf.io.gfile.makedirs never returns there (trainer/run_folder/run_dirs.py).
  output = _run(bucket, _main('gs://no-such-bucket/run', '--train_steps=5'), code=2)
  assert output.strip().splitlines()[-1] == (
      'error: cannot write to the run folder (--model_dir) gs://no-such-bucket/run: the bucket '
      'gs://no-such-bucket does not exist; choose a folder this process may create and write')
