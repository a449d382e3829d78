"""trainer.predict's output: a line per file, on the console or in a file.

  console  `FILE<TAB>CLASS<TAB>PROBABILITY`, a class and probability more per --top_k
  .jsonl   Vertex AI batch prediction's PredictionResult, a JSON object per line:
           {"instance": {"path": ...}, "prediction": {...}} or {"instance": ..., "error":
           {"status": "NOT_FOUND", "message": ...}}; the prediction is what the export's
           signatures return (probabilities, class_id, class_name) and the top k classes
  .csv     a header, then path, the top k (class_name, probability) pairs, label, error

A file that cannot be classified gets its line in the file, and an `error:` line on the
console in any case.
"""

import csv
import io
import json
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer.core.errors import UserError
from trainer.report import logs

FORMATS = {'.jsonl': 'jsonl', '.csv': 'csv'}


class Console:
  """Results on stdout, tab-separated; errors on stderr."""

  def __init__(self, class_names: Sequence[str], top_k: int):
    self._names, self._top_k = class_names, top_k

  def result(self, path: str, label: Optional[str], probabilities: np.ndarray) -> None:
    del label
    best = top(probabilities, self._top_k)
    print('\t'.join([path] + [f'{self._names[i]}\t{probabilities[i]:.3f}' for i in best]))

  def error(self, path: str, label: Optional[str], status: str, message: str) -> None:
    del label, status
    logs.plain_line(f'error: {path}: {message}', 'ERROR')

  def close(self) -> None:
    pass


def top(probabilities: np.ndarray, k: int) -> List[int]:
  """The indices of the k highest probabilities, highest first (ties: the lower index)."""
  return list(np.argsort(-probabilities, kind='stable')[:k])


class FileWriter:
  """Every file's line in `path` (JSON Lines or CSV, by its extension); local or gs://."""

  def __init__(self, path: str, class_names: Sequence[str], top_k: int, labelled: bool):
    self.format = next((fmt for ext, fmt in FORMATS.items() if path.lower().endswith(ext)), None)
    if self.format is None:
      raise UserError(f'--output={path}: name a .jsonl (JSON Lines) or .csv file')
    self._names, self._top_k, self._labelled = class_names, top_k, labelled
    self._path = path
    self._file = tf.io.gfile.GFile(path, 'w')
    self._write('')  # Opens the file: a folder that is not there fails now, not after a batch.
    self._row = io.StringIO()
    if self.format == 'csv':
      self._csv = csv.writer(self._row, lineterminator='\n')
      header = ['path']
      for rank in range(1, top_k + 1):
        suffix = '' if rank == 1 else f'_{rank}'
        header += [f'class_name{suffix}', f'probability{suffix}']
      self._csv_row(header + (['label'] if labelled else []) + ['error'])

  def _instance(self, path, label):
    return {'path': path, **({'label': label} if self._labelled else {})}

  def result(self, path: str, label: Optional[str], probabilities: np.ndarray) -> None:
    best = top(probabilities, self._top_k)
    if self.format == 'csv':
      row = [path]
      for i in best:
        row += [self._names[i], f'{probabilities[i]:.6f}']
      self._csv_row(row + ([label] if self._labelled else []) + [''])
      return
    prediction = {
        'probabilities': [float(p) for p in probabilities],
        'class_id': int(best[0]), 'class_name': self._names[best[0]],
        'top_k': [{'class_id': int(i), 'class_name': self._names[i],
                   'probability': float(probabilities[i])} for i in best]}
    self._line({'instance': self._instance(path, label), 'prediction': prediction})

  def error(self, path: str, label: Optional[str], status: str, message: str) -> None:
    if self.format == 'csv':
      self._csv_row([path] + [''] * (2 * self._top_k) + ([label or ''] if self._labelled
                                                         else []) + [message])
      return
    self._line({'instance': self._instance(path, label),
                'error': {'status': status, 'message': message}})

  def _line(self, entry: dict) -> None:
    self._write(json.dumps(entry, ensure_ascii=False) + '\n')

  def _csv_row(self, values) -> None:
    self._row.seek(0)
    self._row.truncate()
    self._csv.writerow(values)
    self._write(self._row.getvalue())

  def _write(self, text: str) -> None:
    try:
      self._file.write(text)
    except (tf.errors.OpError, OSError) as e:
      raise UserError(f'cannot write --output={self._path}: {e}') from None

  def close(self) -> None:
    try:
      self._file.close()  # A gs:// file is uploaded here.
    except (tf.errors.OpError, OSError) as e:
      raise UserError(f'cannot write --output={self._path}: {e}') from None


class Both:
  """The file writer for every line, and the console for errors."""

  def __init__(self, file_writer: FileWriter, console: Console):
    self._file, self._console = file_writer, console

  def result(self, path, label, probabilities):
    self._file.result(path, label, probabilities)

  def error(self, path, label, status, message):
    self._file.error(path, label, status, message)
    self._console.error(path, label, status, message)

  def close(self):
    self._file.close()
