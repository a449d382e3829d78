"""A finished run as TensorBoard shows it: its event files, and a real TensorBoard server."""

import contextlib
import json
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from tests.conftest import make_source, free_ports
from tests import tb_events
from trainer.core.config import Config
from trainer.jobs import train
from trainer.report import summaries
from trainer.run_folder import records

# Two epochs of 16 steps, logged every 5 steps; the profile window cuts loops at 2 and 7.
_CONFIG = dict(batch_size=32, epochs=2, steps_per_loop=5, learning_rate=3e-3,
               profile_steps='3,7')
_TRAIN_STEPS = [2, 7, 12, 16, 21, 26, 31, 32]
_EPOCH_ENDS = [16, 32]

# One worker runs them all: they share the module's run.
pytestmark = pytest.mark.xdist_group('tensorboard_run')


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp('runs') / 'run'
  outcome = train.train_and_evaluate(Config(model_dir=str(model_dir), **_CONFIG), None,
                                     make_source())
  return outcome, model_dir


def test_train_scalars_every_logging_interval(finished_run):
  _, model_dir = finished_run
  train_scalars = tb_events.scalars(model_dir / 'train')
  assert set(train_scalars) == set(summaries.TRAIN_SCALARS)
  for tag, series in train_scalars.items():
    assert [step for step, _ in series] == _TRAIN_STEPS, tag
  values = {tag: np.array([v for _, v in series]) for tag, series in train_scalars.items()}
  assert np.all(values['loss'] > 0) and values['loss'][-1] < values['loss'][0]
  assert np.all((0 <= values['accuracy']) & (values['accuracy'] <= 1))
  np.testing.assert_allclose(values['learning_rate'], 3e-3, rtol=1e-6)
  assert np.all(values['examples_per_second'] > 0) and np.all(values['step_time'] > 0)
  assert np.all((0 <= values['input_wait_fraction']) & (values['input_wait_fraction'] < 1))


def test_eval_scalars_and_confusion_matrix_every_epoch(finished_run):
  outcome, model_dir = finished_run
  eval_scalars = tb_events.scalars(model_dir / 'eval')
  per_class = {f'per_class/c{i}': _EPOCH_ENDS for i in range(10)}
  assert {tag: [s for s, _ in series] for tag, series in eval_scalars.items()} == dict(
      per_class, loss=_EPOCH_ENDS, accuracy=_EPOCH_ENDS)
  for name, accuracy in outcome.metrics['per_class_accuracy'].items():
    assert eval_scalars[f'per_class/{name}'][-1][1] == pytest.approx(accuracy)
  assert eval_scalars['accuracy'][-1][1] == pytest.approx(outcome.metrics['eval_accuracy'])
  assert eval_scalars['loss'][-1][1] == pytest.approx(outcome.metrics['eval_loss'], rel=1e-6)
  pictures = tb_events.images(model_dir / 'eval')
  assert [step for step, _ in pictures['confusion_matrix']] == _EPOCH_ENDS
  # The counts behind the last picture: every eval example once, the diagonal the hits.
  counts = outcome.trainer.eval_confusion.result()
  assert counts.sum() == 100
  assert np.trace(counts) / 100 == pytest.approx(outcome.metrics['eval_accuracy'])


def test_training_images_hparams_and_profile(finished_run):
  outcome, model_dir = finished_run
  (step, grid), = tb_events.images(model_dir / 'train')['training_images']
  assert step == 0 and grid.shape[0] > 400 and grid.shape[1] > 400  # 5 x 5 cells of 96 px.
  session, experiment = tb_events.hparams(model_dir)
  assert session.hparams['batch_size'].number_value == 32
  assert session.hparams['strategy'].string_value == 'default'
  assert session.hparams['lr_schedule'].string_value == 'constant'
  assert session.hparams['replicas'].number_value == 1
  assert 'model_dir' not in session.hparams and 'profile_steps' not in session.hparams
  assert {m.name.tag for m in experiment.metric_infos} == set(summaries.HPARAMS_METRICS)
  final = tb_events.scalars(model_dir)
  assert final['final/eval_accuracy'] == [(32, pytest.approx(outcome.metrics['eval_accuracy']))]
  traces = list(model_dir.glob('train/plugins/profile/*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


@contextlib.contextmanager
def tensorboard(logdir, log_file):
  """A TensorBoard server on a free localhost port; yields its base URL, then stops it."""
  port, = free_ports(1)
  with open(log_file, 'w') as log:
    server = subprocess.Popen(
        [sys.executable, '-m', 'tensorboard.main', f'--logdir={logdir}', '--host=127.0.0.1',
         f'--port={port}'], stdout=log, stderr=subprocess.STDOUT)
  try:
    yield f'http://127.0.0.1:{port}', server
  finally:
    server.terminate()
    try:
      server.wait(timeout=20)
    except subprocess.TimeoutExpired:
      server.kill()
      server.wait()


def _get(url, body=None):
  data = json.dumps(body).encode() if body is not None else None
  request = urllib.request.Request(url, data=data, headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=10) as response:
    return json.load(response)


def _poll(url, server, log_file, ready, timeout=90):
  """GETs `url` until `ready(answer)`: the server starts, then loads the logdir, in its time."""
  deadline = time.monotonic() + timeout
  while True:
    if server.poll() is not None:
      pytest.fail(f'tensorboard exited {server.returncode}: {open(log_file).read()[-2000:]}')
    try:
      answer = _get(url)
      if ready(answer):
        return answer
    except OSError:  # Not listening yet.
      answer = None
    if time.monotonic() > deadline:
      pytest.fail(f'tensorboard never served {url} (last answer {answer!r}): '
                  f'{open(log_file).read()[-2000:]}')
    time.sleep(0.25)


@pytest.mark.slow
def test_a_tensorboard_server_serves_what_training_logged(finished_run, tmp_path):
  outcome, model_dir = finished_run
  log_file = tmp_path / 'tensorboard.log'
  with tensorboard(model_dir, log_file) as (url, server):
    tags = _poll(f'{url}/data/plugin/scalars/tags', server, log_file,
                 lambda answer: 'accuracy' in answer.get('eval', {}))
    assert set(tags['train']) == set(summaries.TRAIN_SCALARS)
    served = _get(f'{url}/data/plugin/scalars/scalars?run=eval&tag=accuracy')
    logged = tb_events.scalars(model_dir / 'eval')['accuracy']
    assert [(step, pytest.approx(value)) for _, step, value in served] == logged
    assert served[-1][2] == pytest.approx(outcome.metrics['eval_accuracy'])

    images = _get(f'{url}/data/plugin/images/tags')
    assert 'confusion_matrix' in images['eval'] and 'training_images' in images['train']
    groups = _get(f'{url}/data/plugin/hparams/session_groups', {
        'experimentName': '', 'allowedStatuses': ['STATUS_UNKNOWN'], 'colParams': [],
        'startIndex': 0, 'sliceSize': 10})['sessionGroups']
    assert len(groups) == 1 and groups[0]['hparams']['batch_size'] == 32
    final = {m['name']['tag']: m['value'] for m in groups[0]['metricValues']}
    assert final['final/eval_accuracy'] == pytest.approx(outcome.metrics['eval_accuracy'])
  assert server.returncode is not None  # Stopped, not left behind.


def test_vertex_ai_variables_choose_the_folders(tmp_path, monkeypatch):
  for name, folder in (('AIP_MODEL_DIR', 'model'), ('AIP_TENSORBOARD_LOG_DIR', 'logs'),
                       ('AIP_CHECKPOINT_DIR', 'checkpoints')):
    monkeypatch.setenv(name, str(tmp_path / folder))
  outcome = train.train_and_evaluate(Config(batch_size=32, epochs=0, train_steps=2), None,
                                     make_source())
  # The run folder is the job's base output folder; the model folder holds the SavedModel.
  assert outcome.model_dir == str(tmp_path)
  assert (tmp_path / records.RESULTS_FILE).exists()
  assert (tmp_path / 'model' / 'saved_model.pb').exists()
  assert list((tmp_path / 'logs' / 'eval').glob('events.out.tfevents.*'))
  assert list((tmp_path / 'checkpoints').rglob('*.index'))
  assert not list((tmp_path / 'model').rglob('events.out.tfevents.*'))
