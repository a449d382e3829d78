"""What trainer.predict classifies: files, folders, globs and gs:// prefixes, as one list.

A file named on the command line is always tried, whatever its name. In a folder (walked
recursively, hidden files and folders left out) only files with an image extension are:
a bucket of uploads holds manifests and logs too, and those are counted, not classified.
With folder labels every file's label is the class folder it sits in, directly under the
folder given: the layout of a training image folder's split.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from trainer.core.errors import UserError
from trainer.data import image_folder

_GLOB_CHARACTERS = '*?['
# Training's image folder extensions, and WebP, which the export's decoding also takes.
EXTENSIONS = image_folder.EXTENSIONS + ('.webp',)


@dataclasses.dataclass
class Inputs:
  paths: List[str]  # Every file to classify, each once, in the order the arguments give.
  labels: Optional[List[str]]  # With folder labels: each file's class folder.
  problems: List[Tuple[str, str]]  # (argument, why it names no image): a line each.
  skipped: int  # Files in the folders given that have no image extension.


def _is_image_name(path: str) -> bool:
  return path.lower().endswith(EXTENSIONS)


def _class_of(folder: str, path: str) -> Optional[str]:
  """The first folder of `path` below `folder`, or None for a file directly in it."""
  relative = path[len(folder.rstrip('/')) + 1:]
  parts = relative.split('/')
  return parts[0] if len(parts) > 1 else None


def expand(arguments: Sequence[str], folder_labels: bool = False) -> Inputs:
  """The files the arguments name. Raises UserError when folder labels cannot apply."""
  paths, labels, problems, skipped = [], [], [], 0
  for argument in arguments:
    matches = [argument]
    if any(c in argument for c in _GLOB_CHARACTERS):
      matches = sorted(tf.io.gfile.glob(argument))
      if not matches:
        problems.append((argument, 'matches no file'))
    for match in matches:
      if tf.io.gfile.isdir(match):
        files = image_folder.list_files(match)
        images = [path for path in files if _is_image_name(path)]
        skipped += len(files) - len(images)
        if not images:
          problems.append((match, 'is a folder holding no image files (' +
                           ', '.join(EXTENSIONS) + ')'))
        if folder_labels:
          classes = [_class_of(match, path) for path in images]
          loose = [path for path, name in zip(images, classes) if name is None]
          if loose:
            raise UserError(f'--folder_labels: {loose[0]} is not in a class folder; give '
                            f'folders laid out as <folder>/<class name>/<images>')
          labels += classes
        paths += images
      elif folder_labels:
        raise UserError(f'--folder_labels takes folders of class folders; {match} is not a '
                        'folder')
      elif tf.io.gfile.exists(match):
        paths.append(match)
      else:
        problems.append((match, 'no such file or folder'))
  # The same file named twice (a file and its folder, overlapping globs) is classified once.
  seen, keep = set(), []
  for i, path in enumerate(paths):
    if path not in seen:
      seen.add(path)
      keep.append(i)
  return Inputs(paths=[paths[i] for i in keep],
                labels=[labels[i] for i in keep] if folder_labels else None,
                problems=problems, skipped=skipped)
