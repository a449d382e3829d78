"""--init_from: a new run starts from the weights of another run, or of an export.

A run (found from any folder of it, run_folder/locate.py) gives its newest intact checkpoint
(checkpoints/ or preemption/, or its export if it has none), with the
averaged weights where it trained with --ema_decay: those are what its evaluations, best/
and export used. An export gives the weights it serves (averaged already). The optimizer and
the step start fresh. A run folder that has checkpoints of its own resumes instead, and the
flag is ignored.
"""

import dataclasses
import os
import types
from typing import List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from trainer.core.config import Config
from trainer.core.errors import UserError, first_line
from trainer.model import cnn
from trainer.model import steps
from trainer.run_folder import checkpointing
from trainer.run_folder import locate
from trainer.run_folder import records

RECORD_KEY = 'initialized_from'  # The entry of config.json that says where the weights came from.


@dataclasses.dataclass
class Weights:
  path: str  # The checkpoint or the export read.
  step: Optional[int]  # The source's training step, where known.
  image_shape: tuple
  num_classes: int
  layers: List[List[np.ndarray]]  # The arrays of each layer that has weights, in order.
  # 'averaged' (the source's --ema_decay averages), 'raw', or 'exported' (what it serves).
  kind: str


def _shape_text(shape) -> str:
  return 'x'.join(str(int(n)) for n in shape)


def _layer_arrays(model) -> List[List[np.ndarray]]:
  return [[np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights]


def _read_run(run: locate.Run, given: str) -> Weights:
  checkpoint_dir = run.dirs.checkpoint_dir
  found = checkpointing.list_checkpoints(checkpoint_dir)
  signature = records.read_json(
      os.path.join(checkpoint_dir, checkpointing.CHECKPOINT_DIR, checkpointing.SIGNATURE_FILE))
  if not found or signature is None:
    if tf.saved_model.contains_saved_model(run.dirs.export):
      logging.info('--init_from=%s: the run has no checkpoint in %s; taking its export %s',
                   given, checkpoint_dir, run.dirs.export)
      return _read_export(run.dirs.export)
    raise UserError(f'--init_from={given}: the run {run.folder} has neither a checkpoint (in '
                    f'{checkpoint_dir}/{checkpointing.CHECKPOINT_DIR}/) nor an export (in '
                    f'{run.dirs.export}/): it was moved without them, or saved none yet')
  source_config = run.config
  info = types.SimpleNamespace(image_shape=tuple(signature['image_shape']),
                               num_classes=signature['num_classes'])
  # The source's own model and optimizer, so that its checkpoint restores as a resume would,
  # moving averages included; outside any strategy (the default one).
  source = steps.build_trainer(source_config, tf.distribute.get_strategy(), info,
                               total_steps=1, steps_per_epoch=1)
  checkpoint = tf.train.Checkpoint(model=source.model, optimizer=source.optimizer,
                                   step=source.global_step)
  path = checkpointing.restore_newest_intact(
      checkpoint, [path for _, path in reversed(found)], label='--init_from: checkpoint',
      mismatch='--init_from: checkpoint {path} does not fit the model its run recorded '
      '({reason})')
  if path is None:
    raise UserError(f'--init_from={given}: all {len(found)} checkpoints in {checkpoint_dir} '
                    'are damaged')
  with source.averaged_weights():
    layers = _layer_arrays(source.model)
  return Weights(path, checkpointing.step_of(path), info.image_shape, info.num_classes, layers,
                 'averaged' if source_config.ema_decay else 'raw')


def _read_export(folder: str) -> Weights:
  loaded = tf.saved_model.load(folder)
  shapes = [spec.shape[1:] for function in loaded.signatures.values()
            for spec in function.structured_input_signature[1].values()
            if spec.dtype == tf.uint8 and spec.shape.rank == 4]
  # The export tracks the model's tf.Variables in model.weights order (model/export.py).
  arrays = [v.numpy() for v in getattr(loaded, 'model_variables', [])]
  if not shapes or not arrays:
    raise UserError(f'--init_from={folder}: not an export of this trainer (no uint8 image '
                    'signature, or no model weights)')
  image_shape, num_classes = tuple(int(n) for n in shapes[0]), int(arrays[-1].shape[0])
  model = cnn.create_model(image_shape, num_classes)
  try:
    model.set_weights(arrays)
  except ValueError as e:
    raise UserError(f'--init_from={folder}: its model is not this trainer\'s '
                    f'({first_line(e)})') from None
  return Weights(folder, _export_step(folder), image_shape, num_classes, _layer_arrays(model),
                 'exported')


def _export_step(folder: str) -> Optional[int]:
  """The step of the run whose export `folder` is (its results.json), where known."""
  try:
    run = locate.find(folder, '--init_from')
  except UserError:
    return None  # An export on its own.
  if not locate.same_folder(run.dirs.export, folder):
    return None
  results = records.read_json(os.path.join(run.folder, records.RESULTS_FILE)) or {}
  return results.get('global_step')
def read(init_from: str) -> Weights:
  """The weights --init_from names: an export's, or the newest checkpoint of the run it
  names (run_folder/locate.py: the run folder, a Vertex AI job's base output folder, ...)."""
  if not tf.io.gfile.isdir(init_from):
    raise UserError(f'--init_from={init_from}: no such folder (give a run folder or an export)')
  if tf.saved_model.contains_saved_model(init_from):
    return _read_export(init_from)
  return _read_run(locate.find(init_from, '--init_from', or_export=True), init_from)


def apply(weights: Weights, model) -> dict:
  """Copies `weights` into `model`; a new output layer when the class counts differ.

  Returns the record config.json keeps.
  """
  shape = tuple(model.input_shape[1:])
  if tuple(weights.image_shape) != shape:
    raise UserError(f'--init_from={weights.path}: its model takes '
                    f'{_shape_text(weights.image_shape)} images, this run\'s data is '
                    f'{_shape_text(shape)} (HxWxchannels); '
                    'for an image folder, --image_size=H,W sets the size')
  num_classes = model.output_shape[-1]
  layers = [layer for layer in model.layers if layer.weights]
  new_head = weights.num_classes != num_classes
  for layer, arrays in zip(layers, weights.layers):
    if new_head and layer.name == cnn.OUTPUT_LAYER:
      continue  # Keeps the initial weights of this run's seed.
    layer.set_weights(arrays)  # Same CNN, same input: the shapes agree.
  record = {'path': weights.path, 'step': weights.step,
            'weights': weights.kind,
            'output_layer': f'new ({weights.num_classes} -> {num_classes} classes)'
                            if new_head else 'copied'}
  logging.info('initialized from %s (step %s, %s weights), output layer %s; fresh optimizer, '
               'step 0', weights.path, weights.step, record['weights'], record['output_layer'])
  return record


def initialize(config: Config, model, model_dir: str, resumed: Optional[int]) -> Optional[dict]:
  """Loads --init_from into `model` unless the run resumed; returns what config.json records
  of where the run's weights came from (kept from its config.json when it resumed)."""
  previous = records.read_json(os.path.join(model_dir, records.CONFIG_FILE)) or {}
  if resumed is not None:
    if config.init_from:
      logging.info('--init_from=%s ignored: this run folder has checkpoints, so the run '
                   'resumes from step %d', config.init_from, resumed)
    return previous.get(RECORD_KEY)
  if not config.init_from:
    return None
  return apply(read(config.init_from), model)
