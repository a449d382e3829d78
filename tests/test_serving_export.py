"""Serving exports: the SavedModel's encoded-image signature and the LiteRT file.

One short run on an image folder of mixed sizes, formats and channel counts, served the
ways a user would: TensorFlow's saved_model_cli, a TF Serving / Vertex AI style JSON request,
trainer.predict, the LiteRT interpreter; each compared with trainer.evaluate or the
SavedModel.
"""

import base64
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests import forked
from tests import image_folders
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.data import image_folder
from trainer.jobs import train
from trainer.model import export
from trainer.model import litert
from trainer.prediction import exports
from trainer.prediction import job

pytestmark = pytest.mark.xdist_group('serving_export')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A 3-class image folder (textured, mixed sizes), trained 8 epochs with mirror views
  (so serving averages two passes, as evaluation does), with float and int8 LiteRT files."""
  root = tmp_path_factory.mktemp('serving')
  files = image_folders.write_textured(root / 'images')
  config = Config(dataset='image_folder', data_dir=str(root / 'images'),
                  model_dir=str(root / 'run'), batch_size=10, epochs=8, steps_per_loop=3,
                  learning_rate=1e-2, eval_flip=True, export_litert=True,
                  litert_quantize='int8')
  outcome = train.train_and_evaluate(config)
  return root, files, outcome


def _export(run):
  root, _, _ = run
  return str(root / 'run' / 'export')


def _file_bytes(paths):
  return [pathlib.Path(path).read_bytes() for path in paths]


def _eval_images(run):
  """The test split as the training pipeline decodes it (uint8, training size)."""
  source = image_folder.ImageFolderSource(str(run[0] / 'images'))
  return np.stack([image for image, _ in source.read('eval', 0, 1).as_numpy_iterator()])


def _serve_rest(loaded, body: str) -> dict:
  """A TF Serving / Vertex AI predict call in row format, decoded as those servers do:
  a {"b64": ...} value is base64-decoded into the bytes of a string input, and a signature
  with one input takes the instances themselves (tensorflow/serving g3doc/api_rest.md)."""
  request = json.loads(body)
  signature = loaded.signatures[request.get('signature_name', 'serving_default')]
  (name, spec), = signature.structured_input_signature[1].items()
  values = [base64.b64decode(item['b64']) if isinstance(item, dict) else item
            for item in request['instances']]
  outputs = signature(**{name: tf.constant(values, spec.dtype)})
  columns = {key: value.numpy().tolist() for key, value in outputs.items()}
  rows = [{key: column[i].decode() if isinstance(column[i], bytes) else column[i]
           for key, column in columns.items()} for i in range(len(values))]
  return {'predictions': rows}


@pytest.mark.slow
def test_bytes_signature_scores_what_trainer_evaluate_reports(run):
  root, files, outcome = run
  result = forked.run([sys.executable, '-m', 'trainer.evaluate', f'--model_dir={root / "run"}'],
                      cwd=REPO, capture_output=True, text=True, timeout=180)
  assert result.returncode == 0, result.stderr[-3000:]
  step = outcome.metrics['global_step']
  written = json.loads((root / 'run' / f'eval_test_{step}.json').read_text())
  loaded = tf.saved_model.load(_export(run))
  paths, labels = zip(*files['test'])
  served = loaded.signatures[export.BYTES_SIGNATURE](image_bytes=tf.constant(_file_bytes(paths)))
  predicted = served['class_id'].numpy()
  counts = np.zeros((3, 3), np.int64)
  np.add.at(counts, (np.array(labels), predicted), 1)
  np.testing.assert_array_equal(counts, written['confusion_matrix'])
  assert written['eval_accuracy'] == pytest.approx(np.mean(predicted == labels), abs=1e-9)
  assert written['eval_accuracy'] > 0.6  # Learned the colours: the comparison means something.

  # Image by image: the same as the uint8 signature on the images as training decodes them,
  # at the training size or not, grey, RGBA, GIF or BMP.
  images = _eval_images(run)
  default = loaded.signatures['serving_default'](images=tf.constant(images))
  np.testing.assert_array_equal(predicted, default['class_id'].numpy())
  np.testing.assert_allclose(served['probabilities'].numpy(),
                             default['probabilities'].numpy(), rtol=1e-5, atol=1e-6)
  # Which a resize of another kind would not give (predict.py's before: no antialiasing).
  naive = np.stack([tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
      image_folder.to_channels(tf.io.decode_image(data, expand_animations=False), 3),
      image_folders.TEXTURED_SIZE)), 0, 255), tf.uint8) for data in _file_bytes(paths)])
  assert np.abs(naive.astype(int) - images).max() > 10


@pytest.mark.slow
def test_saved_model_cli_and_a_rest_request_serve_the_files(run, tmp_path):
  _, files, _ = run
  paths = [path for path, _ in files['test']]
  data = _file_bytes(paths)
  loaded = tf.saved_model.load(_export(run))
  want = loaded.signatures[export.BYTES_SIGNATURE](image_bytes=tf.constant(data))

  # TensorFlow's own tool, in a process of its own, on the export as written.
  np.save(tmp_path / 'files.npy', np.array(data, dtype=object), allow_pickle=True)
  cli = subprocess.run(
      [sys.executable, '-m', 'tensorflow.python.tools.saved_model_cli', 'run',
       '--dir', _export(run), '--tag_set', 'serve', '--signature_def', 'serving_bytes',
       '--inputs', f'image_bytes={tmp_path / "files.npy"}', '--outdir', str(tmp_path / 'out')],
      capture_output=True, text=True, timeout=300, check=False)
  assert cli.returncode == 0, cli.stderr[-3000:]
  np.testing.assert_array_equal(np.load(tmp_path / 'out' / 'class_id.npy'),
                                want['class_id'].numpy())
  np.testing.assert_allclose(np.load(tmp_path / 'out' / 'probabilities.npy'),
                             want['probabilities'].numpy(), rtol=1e-5, atol=1e-6)
  assert list(np.load(tmp_path / 'out' / 'class_name.npy', allow_pickle=True)) == list(
      want['class_name'].numpy())

  # The request body a client sends to TF Serving or a Vertex AI endpoint.
  body = json.dumps({'signature_name': 'serving_bytes',
                     'instances': [{'b64': base64.b64encode(d).decode()} for d in data]})
  response = _serve_rest(loaded, body)['predictions']
  assert [row['class_id'] for row in response] == want['class_id'].numpy().tolist()
  assert [row['class_name'] for row in response] == [
      n.decode() for n in want['class_name'].numpy()]

  # trainer.predict prints what the server returns.
  printed = forked.run([sys.executable, '-m', 'trainer.predict', f'--model={_export(run)}',
                        *paths], cwd=REPO, capture_output=True, text=True, timeout=180)
  assert printed.returncode == 0, printed.stderr[-3000:]
  lines = [line.split('\t') for line in printed.stdout.splitlines()]
  assert [(p, n, f'{max(row["probabilities"]):.3f}') for p, (n, row) in
          zip(paths, ((row['class_name'], row) for row in response))] == [
              tuple(line) for line in lines]


def test_predict_reads_an_export_without_the_bytes_signature_alike(run, tmp_path):
  """Exports written before serving_bytes (and before the pixel limit and class list):
  trainer.predict decodes the files with the same function, and finds the class names."""
  _, files, outcome = run
  module = export._Serving(outcome.trainer.model, ('cat', 'dog', 'owl'), True)  # pylint: disable=protected-access
  del module.classes, module.max_pixels
  export.save(module, str(tmp_path / 'old'), {'serving_default': module.serve})
  paths = [path for path, _ in files['test']]
  old = tf.saved_model.load(str(tmp_path / 'old'))
  assert export.BYTES_SIGNATURE not in old.signatures and not hasattr(old, 'max_pixels')
  outputs = {}
  for name, folder in (('old', str(tmp_path / 'old')), ('new', _export(run))):
    out = tmp_path / f'{name}.jsonl'
    summary = job.run(exports.load(folder), paths, job.Options(output=str(out)))
    assert (summary.classified, summary.failed) == (len(paths), 0)
    outputs[name] = [json.loads(line)['prediction'] for line in out.read_text().splitlines()]
  assert [p['class_name'] for p in outputs['old']] == [p['class_name'] for p in outputs['new']]
  np.testing.assert_allclose([p['probabilities'] for p in outputs['old']],
                             [p['probabilities'] for p in outputs['new']], rtol=1e-5)


@pytest.mark.slow
def test_predict_on_the_labelled_folder_reports_what_trainer_evaluate_does(run, tmp_path):
  root, _, outcome = run
  step = outcome.metrics['global_step']
  written = root / 'run' / f'eval_test_{step}.json'
  if not written.exists():  # Written by the evaluate test above, unless it was deselected.
    result = forked.run([sys.executable, '-m', 'trainer.evaluate',
                         f'--model_dir={root / "run"}'], cwd=REPO, capture_output=True,
                        text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
  evaluated = json.loads(written.read_text())
  summary = job.run(exports.load(_export(run)), [str(root / 'images' / 'test')],
                    job.Options(folder_labels=True, output=str(tmp_path / 'out.csv')))
  np.testing.assert_array_equal(summary.confusion, evaluated['confusion_matrix'])
  assert summary.accuracy == pytest.approx(evaluated['eval_accuracy'], abs=1e-9)
  assert summary.accuracy > 0.6


def _litert_outputs(model_content: bytes, images):
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interpreter = Interpreter(model_content=model_content)
  inputs, = interpreter.get_input_details()
  outputs, = interpreter.get_output_details()
  interpreter.resize_tensor_input(inputs['index'], images.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(inputs['index'], images)
  interpreter.invoke()
  return interpreter, interpreter.get_tensor(outputs['index'])


def test_litert_files_agree_with_the_saved_model(run):
  pytest.importorskip('ai_edge_litert', reason='the LiteRT interpreter: requirements-dev.txt')
  root, _, _ = run
  images = _eval_images(run)
  loaded = tf.saved_model.load(_export(run))
  want = loaded.signatures['serving_default'](images=tf.constant(images))['probabilities'].numpy()

  with open(root / 'run' / 'export' / litert.FILE, 'rb') as f:
    float_model = f.read()
  interpreter, got = _litert_outputs(float_model, images)
  assert interpreter.get_input_details()[0]['dtype'] == np.uint8
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

  with open(root / 'run' / 'export' / litert.INT8_FILE, 'rb') as f:
    int8_model = f.read()
  interpreter, got = _litert_outputs(int8_model, images)
  assert interpreter.get_input_details()[0]['dtype'] == np.uint8
  # Full-integer: weights and activations int8; float only where the uint8 pixels are cast
  # on their way in (then quantized) and for the probabilities on their way out.
  details = interpreter.get_tensor_details()
  assert sum(t['dtype'] == np.int8 for t in details) > 20
  assert len([t for t in details if t['dtype'] == np.float32]) == 2
  assert len(int8_model) < len(float_model) / 2
  assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.8
  assert np.abs(got - want).mean() < 0.05


def test_litert_quantize_needs_the_litert_file():
  with pytest.raises(UserError, match='add --export_litert'):
    Config(litert_quantize='int8').validate()
  with pytest.raises(UserError, match='unknown --litert_quantize'):
    Config(export_litert=True, litert_quantize='int4').validate()
  Config(export_litert=True, litert_quantize='int8').validate()


def test_the_calibration_images_come_from_every_class(run):
  source = image_folder.ImageFolderSource(str(run[0] / 'images'))
  sample = litert.representative_images(source, count=12)
  images, labels = zip(*source.read('train', 0, 1).as_numpy_iterator())
  # Every other one of the 30 images, which the folder lists class by class.
  np.testing.assert_array_equal(sample, np.stack(images[::2][:12]))
  assert set(labels[::2][:12]) == {0, 1, 2}


def test_the_converter_s_noise_is_held_back_and_other_lines_pass(capfd):
  import os  # pylint: disable=g-import-not-at-top
  with litert._converter_noise_dropped():  # pylint: disable=protected-access
    os.write(2, b'W0000 00:00:1.0  1 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.\n'
                b'fully_quantize: 0, inference_type: 6, input_inference_type: UINT8\n'
                b'W0000 00:00:1.0  1 flatbuffer_export.cc:3851] Skipping runtime version '
                b'metadata in the model. This will be generated by the exporter.\n'
                b'E0000 00:00:1.0  1 x.cc:1] a real error\n')
  assert capfd.readouterr().err == 'E0000 00:00:1.0  1 x.cc:1] a real error\n'
  with pytest.raises(ValueError):
    with litert._converter_noise_dropped():  # pylint: disable=protected-access
      os.write(2, b'W0000 00:00:1.0  1 a.cc:1] Ignored output_format.\n')
      raise ValueError('conversion failed')
  assert 'Ignored output_format' in capfd.readouterr().err  # All of it, when it failed.
