"""Sizes and test accuracy of a run's exports: the SavedModel, model.tflite, model_int8.tflite.

    python -m trainer.main --data_dir=DIR --model_dir=runs/x --export_litert --litert_quantize=int8
    python -m benchmarks.serving_exports --export=runs/x/export --data_dir=DIR

Runs each file on the whole CIFAR-10 test split (the LiteRT ones in ai-edge-litert's
interpreter, a test dependency: requirements-dev.txt) and prints one JSON object: bytes on
disk, accuracy, and the share of test images on which each agrees with the SavedModel.
"""

import argparse
import json
import os

import numpy as np

from trainer.model import litert

_BATCH = 500


def _folder_bytes(folder: str, leave_out=()) -> int:
  return sum(os.path.getsize(os.path.join(directory, name))
             for directory, _, names in os.walk(folder) for name in names
             if name not in leave_out)


def _litert_predictions(path: str, images: np.ndarray) -> np.ndarray:
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interpreter = Interpreter(model_path=path)
  inputs, = interpreter.get_input_details()
  outputs, = interpreter.get_output_details()
  interpreter.resize_tensor_input(inputs['index'], (_BATCH,) + images.shape[1:])
  interpreter.allocate_tensors()
  predicted = []
  for start in range(0, len(images), _BATCH):
    interpreter.set_tensor(inputs['index'], images[start:start + _BATCH])
    interpreter.invoke()
    predicted.append(interpreter.get_tensor(outputs['index']).argmax(-1))
  return np.concatenate(predicted)


def measure(export_dir: str, data_dir: str, split: str = 'test') -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data = tfds.load('cifar10', split=split, data_dir=data_dir, batch_size=-1)
  images, labels = data['image'].numpy(), data['label'].numpy()
  assert len(images) % _BATCH == 0, f'{len(images)} test images: not batches of {_BATCH}'
  serve = tf.saved_model.load(export_dir).signatures['serving_default']
  reference = np.concatenate([serve(images=tf.constant(images[i:i + _BATCH]))['class_id']
                              .numpy() for i in range(0, len(images), _BATCH)])
  results = {'examples': len(images), 'saved_model': {
      'bytes': _folder_bytes(export_dir, leave_out=(litert.FILE, litert.INT8_FILE)),
      'accuracy': float(np.mean(reference == labels))}}
  for name in (litert.FILE, litert.INT8_FILE):
    path = os.path.join(export_dir, name)
    if os.path.exists(path):
      predicted = _litert_predictions(path, images)
      results[name] = {'bytes': os.path.getsize(path),
                       'accuracy': float(np.mean(predicted == labels)),
                       'agreement_with_saved_model': float(np.mean(predicted == reference))}
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--export', required=True, help='a run\'s export folder')
  parser.add_argument('--data_dir', default=None, help='TFDS folder holding cifar10')
  args = parser.parse_args()
  print(json.dumps(measure(args.export, args.data_dir), indent=1))


if __name__ == '__main__':
  main()
