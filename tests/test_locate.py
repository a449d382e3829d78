"""A run's folder is its handle (trainer/run_folder/locate.py): trainer.evaluate, --init_from
and trainer.predict find every part of a run from its folder, from a Vertex AI job's base
output folder, or from one of its parts, wherever the parts went."""

import json
import os
import re
import shutil
import sys

import pytest

from tests import forked
from tests import image_folders
from tests.conftest import REPO, TEN_STEPS, make_source
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.jobs import evaluation
from trainer.jobs import init_from
from trainer.jobs import train
from trainer.run_folder import locate
from trainer.run_folder import records

VERTEX_FOLDERS = {'AIP_MODEL_DIR': 'model', 'AIP_CHECKPOINT_DIR': 'checkpoints',
                  'AIP_TENSORBOARD_LOG_DIR': 'logs'}


def _command(module, *args, env=None):
  result = forked.run([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                      capture_output=True, text=True, timeout=300)
  return result


def _last_error(result):
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def vertex_job(tmp_path_factory):
  """(base output folder, results) of a job trained as Vertex AI runs it: no path flags,
  the three AIP_* variables naming model/, checkpoints/ and logs/ under the base folder."""
  root = tmp_path_factory.mktemp('vertex')
  image_folders.write(root / 'images')
  base = root / 'job'
  env = dict(os.environ, **{name: f'{base / folder}/' for name, folder in VERTEX_FOLDERS.items()})
  result = _command('trainer.main', '--dataset=image_folder', f'--data_dir={root / "images"}',
                    '--batch_size=8', '--epochs=1', '--steps_per_loop=3', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return base, json.loads((base / records.RESULTS_FILE).read_text())


def test_a_vertex_job_s_model_folder_is_the_savedmodel_alone(vertex_job):
  # What Vertex AI's model upload and its prebuilt TensorFlow serving containers take: the
  # artifact folder with saved_model.pb in it; the run's records live one level up.
  base, _ = vertex_job
  assert (base / 'model' / 'saved_model.pb').is_file()
  assert {p.name for p in (base / 'model').iterdir()} <= {
      'assets', 'fingerprint.pb', 'saved_model.pb', 'variables'}
  # The check the Vertex AI SDK makes before it uploads a local folder for a prebuilt
  # serving image (google-cloud-aiplatform's Model.upload; it names no public constant).
  # pylint: disable=g-import-not-at-top,protected-access
  from google.cloud.aiplatform import models as vertex_models
  assert any((base / 'model' / name).is_file()
             for name in vertex_models._SUPPORTED_MODEL_FILE_NAMES)
  assert (base / records.CONFIG_FILE).is_file() and (base / records.RESULTS_FILE).is_file()
  assert list((base / 'checkpoints' / 'checkpoints').glob('ckpt-3.index'))
  recorded = json.loads((base / records.CONFIG_FILE).read_text())[locate.RECORD_KEY]
  assert recorded == {'checkpoint_dir': 'checkpoints', 'tensorboard_dir': 'logs',
                      'export_dir': 'model'}


@pytest.mark.parametrize('given', ['', 'model', 'checkpoints', 'checkpoints/checkpoints',
                                   'logs'])
def test_every_folder_of_a_vertex_job_finds_the_run(vertex_job, given):
  base, _ = vertex_job
  run = locate.find(str(base / given) if given else str(base))
  assert run.dirs.model_dir == str(base)
  assert (run.dirs.checkpoint_dir, run.dirs.tensorboard_dir, run.dirs.export) == (
      str(base / 'checkpoints'), str(base / 'logs'), str(base / 'model'))
  assert run.config.dataset == 'image_folder'


@pytest.mark.parametrize('given,kind,path', [
    ('', 'raw', 'checkpoints/checkpoints/ckpt-3'),
    ('checkpoints', 'raw', 'checkpoints/checkpoints/ckpt-3'),
    ('model', 'exported', 'model'),
])
def test_init_from_takes_the_base_folder_or_the_model_folder(vertex_job, given, kind, path):
  base, results = vertex_job
  weights = init_from.read(str(base / given) if given else str(base))
  assert (weights.kind, weights.step, weights.path) == (kind, results['global_step'],
                                                       str(base / path))
  assert (weights.num_classes, weights.image_shape) == (2, tuple(image_folders.FIRST_SIZE) + (3,))


@pytest.mark.slow
@pytest.mark.parametrize('given,vertex_variables', [('', False), ('model', True)])
def test_evaluate_takes_the_base_folder_or_the_model_folder(vertex_job, given,
                                                            vertex_variables):
  """On another machine, where none of Vertex AI's variables are set, or with the job's
  still set: evaluation reads the folders the run recorded, not the environment."""
  base, results = vertex_job
  env = {name: value for name, value in os.environ.items() if name not in VERTEX_FOLDERS}
  if vertex_variables:
    env.update({name: f'{base / folder}/' for name, folder in VERTEX_FOLDERS.items()})
  result = _command('trainer.evaluate', f'--model_dir={base / given}', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads((base / f'eval_test_{results["global_step"]}.json').read_text())
  assert written['eval_accuracy'] == pytest.approx(results['eval_accuracy'], abs=1e-6)
  assert written['checkpoint'] == str(base / 'checkpoints' / 'checkpoints' / 'ckpt-3')
  assert list((base / 'logs' / 'eval_test').glob('events.out.tfevents.*'))


@pytest.mark.slow
def test_the_command_line_fine_tunes_and_predicts_from_the_base_folder(vertex_job, tmp_path):
  base, _ = vertex_job
  image_folders.write(tmp_path / 'images')
  result = _command('trainer.main', '--dataset=image_folder', f'--data_dir={tmp_path / "images"}',
                    f'--model_dir={tmp_path / "tuned"}', '--batch_size=8', '--train_steps=1',
                    f'--init_from={base}')
  assert result.returncode == 0, result.stderr[-3000:]
  recorded = records.read_json(str(tmp_path / 'tuned' / records.CONFIG_FILE))
  assert recorded[init_from.RECORD_KEY]['path'] == str(base / 'checkpoints' / 'checkpoints' /
                                                       'ckpt-3')
  image = next((tmp_path / 'images' / 'test' / 'cat').iterdir())
  predicted = _command('trainer.predict', f'--model={base}', str(image))
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert predicted.stdout.startswith(f'{image}\t')


@pytest.fixture(scope='module')
def scattered_run(tmp_path_factory):
  """A 10-step run whose checkpoints, logs and export each went to a folder of their own."""
  root = tmp_path_factory.mktemp('scattered')
  config = Config(model_dir=str(root / 'run'), checkpoint_dir=str(root / 'fast' / 'ckpt'),
                  tensorboard_dir=str(root / 'tb'), export_dir=str(root / 'serving' / 'v1'),
                  **TEN_STEPS)
  outcome = train.train_and_evaluate(config, None, make_source())
  return root, outcome.metrics


def test_a_run_finds_parts_that_went_elsewhere(scattered_run):
  root, metrics = scattered_run
  run = locate.find(str(root / 'run'))
  assert (run.folder, run.dirs.checkpoint_dir, run.dirs.tensorboard_dir,
          run.dirs.export) == (str(root / 'run'), str(root / 'fast' / 'ckpt'),
                               str(root / 'tb'), str(root / 'serving' / 'v1'))
  with pytest.raises(locate.NoRun):  # A part outside the run folder does not lead back to it.
    locate.find(str(root / 'fast' / 'ckpt'))
  weights = init_from.read(str(root / 'run'))
  assert (weights.kind, weights.step) == ('raw', 10)
  evaluator = evaluation.Evaluator(run.config, run.dirs, 'test', source=make_source())
  try:
    result = evaluator.evaluate(evaluator.resolve(evaluation.LATEST))
  finally:
    evaluator.close()
  assert result.accuracy == pytest.approx(metrics['eval_accuracy'], abs=1e-6)
  assert locate.export_folder(str(root / 'run')) == str(root / 'serving' / 'v1')


def test_a_missing_part_is_named_with_where_it_was_looked_for(scattered_run, tmp_path):
  root, _ = scattered_run
  shutil.copytree(root / 'run', tmp_path / 'run')  # Moved without its parts elsewhere...
  shutil.copytree(root / 'serving', tmp_path / 'serving')
  config = json.loads((tmp_path / 'run' / records.CONFIG_FILE).read_text())
  # ... which it recorded in full: the checkpoints are gone, the export moved beside it.
  config[locate.RECORD_KEY] = dict(config[locate.RECORD_KEY],
                                   checkpoint_dir=str(tmp_path / 'gone'),
                                   export_dir=str(tmp_path / 'serving' / 'v1'))
  (tmp_path / 'run' / records.CONFIG_FILE).write_text(json.dumps(config))
  run = locate.find(str(tmp_path / 'run'))
  with pytest.raises(UserError, match=re.escape(
      f'the run {tmp_path / "run"} keeps its checkpoints in {tmp_path / "gone"}, which does '
      'not exist')):
    evaluation.Evaluator(run.config, run.dirs, 'test', source=make_source())
  # Without checkpoints --init_from takes the run's export; without either it says so.
  assert init_from.read(str(tmp_path / 'run')).kind == 'exported'
  shutil.rmtree(tmp_path / 'serving')
  with pytest.raises(UserError, match=re.escape(
      f'--init_from={tmp_path / "run"}: the run {tmp_path / "run"} has neither a checkpoint '
      f'(in {tmp_path / "gone"}/checkpoints/) nor an export (in {tmp_path / "serving" / "v1"}/)'
  )):
    init_from.read(str(tmp_path / 'run'))
  with pytest.raises(UserError, match=re.escape(
      f'the run {tmp_path / "run"} keeps its export in {tmp_path / "serving" / "v1"}, which '
      'does not exist')):
    locate.export_folder(str(tmp_path / 'run'))


def test_a_run_moved_whole_finds_its_parts_in_its_new_place(ten_step_run, tmp_path):
  # ten_step_run is a copy of a run trained elsewhere: its record is relative to its folder.
  run = locate.find(str(tmp_path))
  assert run.dirs.checkpoint_dir == str(tmp_path)
  assert run.dirs.export == str(tmp_path / 'export')
  assert locate.find(str(tmp_path / 'export')).folder == str(tmp_path)
  assert init_from.read(str(tmp_path)).step == TEN_STEPS['train_steps']


def test_a_vertex_job_from_before_the_record_is_found_from_its_base_folder(
    ten_step_run, tmp_path):
  """Such a job wrote config.json and export/ in <base>/model, checkpoints in
  <base>/checkpoints, and recorded no folders."""
  base = tmp_path / 'job'
  (base / 'checkpoints').mkdir(parents=True)
  shutil.move(tmp_path / 'checkpoints', base / 'checkpoints' / 'checkpoints')
  (base / 'model').mkdir()
  for name in (records.CONFIG_FILE, records.RESULTS_FILE, 'export'):
    shutil.move(tmp_path / name, base / 'model' / name)
  config = json.loads((base / 'model' / records.CONFIG_FILE).read_text())
  del config[locate.RECORD_KEY]
  config['model_dir'] = None
  (base / 'model' / records.CONFIG_FILE).write_text(json.dumps(config))
  for given in (base, base / 'model', base / 'checkpoints'):
    run = locate.find(str(given))
    assert (run.folder, run.dirs.checkpoint_dir) == (str(base / 'model'),
                                                     str(base / 'checkpoints'))
  assert init_from.read(str(base)).step == TEN_STEPS['train_steps']


def test_a_folder_of_no_run_names_every_place_looked(tmp_path):
  (tmp_path / 'a' / 'b').mkdir(parents=True)
  given = tmp_path / 'a' / 'b'
  with pytest.raises(locate.NoRun, match=re.escape(
      f'no run in --model_dir={given}: no config.json in {given}, {given / "model"}, '
      f'{tmp_path / "a"} or {tmp_path} (a run folder')):
    locate.find(str(given))
  with pytest.raises(UserError, match=re.escape(
      f'--model={given} is neither an export (no saved_model.pb in it) nor a run: no '
      'config.json in')):
    locate.export_folder(str(given))


def test_watching_waits_for_the_run_to_record_itself(ten_step_run, tmp_path):
  config = (tmp_path / records.CONFIG_FILE).read_text()
  (tmp_path / records.CONFIG_FILE).unlink()
  now = [0.0]

  def sleep(seconds):
    now[0] += seconds
    if now[0] >= 3:  # The trainer starts after 3 s.
      (tmp_path / records.CONFIG_FILE).write_text(config)

  run = locate.wait(str(tmp_path), timeout=10, poll_seconds=1, clock=lambda: now[0],
                    sleep=sleep)
  assert run.folder == str(tmp_path) and now[0] == 3
  (tmp_path / records.CONFIG_FILE).unlink()
  with pytest.raises(locate.NoRun):
    locate.wait(str(tmp_path), timeout=2, poll_seconds=1, clock=lambda: now[0],
                sleep=lambda seconds: now.__setitem__(0, now[0] + seconds))


def test_a_run_without_its_export_yet_says_so(ten_step_run, tmp_path):
  shutil.rmtree(tmp_path / 'export')
  (tmp_path / 'export').mkdir()  # As a run that has not exported yet leaves it.
  with pytest.raises(UserError, match=re.escape(
      f'--model={tmp_path}: the run has no export in {tmp_path / "export"} (no saved_model.pb)')):
    locate.export_folder(str(tmp_path))
