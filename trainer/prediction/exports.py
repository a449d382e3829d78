"""The export trainer.predict classifies with: its uint8 signature and what it declares.

Predict decodes the files itself, in parallel, with the function the export's serving_bytes
signature applies to each file (trainer/data/image_folder.py decode), and sends the images
to serving_default: serving_bytes is that decoding followed by serving_default, so the
figures are the ones a server returns for the files. Exports from before the pixel limit or
the class list load too: their limit is the default, their class names the constant their
signature holds.
"""

import dataclasses
from typing import Callable, Optional, Tuple

import tensorflow as tf

from trainer.core.errors import UserError, first_line
from trainer.data import image_header


@dataclasses.dataclass
class Export:
  folder: str
  classify: Callable  # uint8 images [batch, H, W, C] -> probabilities [batch, classes].
  image_shape: Tuple[int, int, int]  # (height, width, channels) the model takes.
  class_names: Tuple[str, ...]
  max_pixels: int  # The export's pixel limit (the default for exports without one).
  declares_limit: bool  # Whether the export holds its own limit.
  loaded: object = None  # Held: the signature's variables live as long as the loaded object.


def _class_names(loaded, serve) -> Tuple[str, ...]:
  classes = getattr(loaded, 'classes', None)
  if classes is not None:
    return tuple(name.decode() for name in classes.numpy())
  # Earlier exports: the names are the one string list their signature captures.
  captured = [c for c in serve.captured_inputs if c.dtype == tf.string and c.shape.rank == 1]
  if len(captured) != 1:
    raise UserError('the export holds no list of class names; re-export it with this version')
  return tuple(name.decode() for name in captured[0].numpy())


def load(folder: str, max_pixels: Optional[int] = None) -> Export:
  """The export in `folder` (what training wrote to <model_dir>/export); `max_pixels`
  overrides its pixel limit. Raises UserError when it is none of this trainer's."""
  try:
    loaded = tf.saved_model.load(folder)
    serve = loaded.signatures['serving_default']
    spec = serve.structured_input_signature[1]['images']
    if spec.dtype != tf.uint8 or spec.shape.rank != 4 or None in spec.shape[1:]:
      raise ValueError(f'its serving_default takes {spec}, not uint8 images')
  except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
    raise UserError(f'cannot load a trainer export from --model={folder}: '
                    f'{first_line(e, 200)}') from None
  stored = getattr(loaded, 'max_pixels', None)
  if max_pixels is None:
    max_pixels = int(stored.numpy()) if stored is not None else image_header.DEFAULT_MAX_PIXELS
  if max_pixels <= 0:
    raise UserError(f'--max_pixels must be positive, got {max_pixels}')

  def classify(images):
    return serve(images=images)['probabilities']

  return Export(folder=folder, classify=classify, image_shape=tuple(spec.shape[1:]),
                class_names=_class_names(loaded, serve), max_pixels=max_pixels,
                declares_limit=stored is not None, loaded=loaded)
