"""The batch prediction job: every file through the export, a line each, then a summary.

Files stream through reading.batches; a file missing from a batch's indices failed in the
pipeline, and gets its error line (reading.diagnose says why) in its place in the order.
Nothing per file is kept: memory is a few batches and, with folder labels, the confusion
matrix, however many files there are.
"""

import dataclasses
import logging
import time
from typing import Callable, List, Optional, Sequence

import numpy as np

from trainer.core.errors import UserError
from trainer.prediction import exports
from trainer.prediction import inputs as inputs_lib
from trainer.prediction import reading
from trainer.prediction import writers
from trainer.report import logs
from trainer.report import progress

PROGRESS_SECONDS = 10.0  # Between progress lines; a job done sooner prints none.


@dataclasses.dataclass
class Options:
  batch_size: int = 64
  top_k: int = 1
  output: str = ''  # A .jsonl or .csv file for every file's line; '': the console.
  folder_labels: bool = False  # Score against the class folders the files are in.


@dataclasses.dataclass
class Summary:
  classified: int
  failed: int  # Files (and arguments) that could not be classified.
  skipped: int  # Files in the folders given without an image extension.
  seconds: float
  confusion: Optional[np.ndarray] = None  # [label, predicted] counts, with folder labels.

  @property
  def accuracy(self) -> Optional[float]:
    if self.confusion is None or not self.confusion.sum():
      return None
    return float(np.trace(self.confusion) / self.confusion.sum())


class _Progress:
  """`N/TOTAL files  R files/s  ETA`, every PROGRESS_SECONDS, at the rate since the first
  batch (which also traces the model)."""

  def __init__(self, total: int, clock: Callable[[], float]):
    self._total, self._clock = total, clock
    self._first = None  # (time, files done) after the first batch.
    self._last_line = clock()

  def update(self, done: int) -> None:
    now = self._clock()
    if self._first is None:
      self._first = (now, done)
      return
    seconds, files = now - self._first[0], done - self._first[1]
    if now - self._last_line < PROGRESS_SECONDS or done >= self._total or files <= 0 \
        or seconds <= 0:
      return
    self._last_line = now
    rate = files / seconds
    eta = (self._total - done) / rate
    logs.log(logging.INFO, f'{done:,}/{self._total:,} files  {rate:.0f} files/s  ETA '
             f'{progress.format_duration(eta)}',
             {'event': 'predict', 'files_done': done, 'files': self._total,
              'files_per_second': round(rate, 1), 'eta_seconds': round(eta, 1)})


def _label_ids(labels: Optional[List[str]], class_names: Sequence[str]):
  if labels is None:
    return None
  index = {name: i for i, name in enumerate(class_names)}
  unknown = sorted(set(labels) - set(index))
  if unknown:
    raise UserError(f'--folder_labels: the class folder(s) {", ".join(unknown)} are not classes '
                    f'of the export ({", ".join(class_names)})')
  return np.array([index[name] for name in labels], np.int64)


def _check(options: Options, export: exports.Export) -> None:
  if options.batch_size <= 0:
    raise UserError(f'--batch_size must be positive, got {options.batch_size}')
  if not 1 <= options.top_k <= len(export.class_names):
    raise UserError(f'--top_k must be between 1 and the export\'s {len(export.class_names)} '
                    f'classes, got {options.top_k}')


def run(export: exports.Export, arguments: Sequence[str], options: Options,
        clock: Callable[[], float] = time.monotonic) -> Summary:
  """Classifies what `arguments` name; writes a line per file; returns the counts."""
  _check(options, export)
  start = clock()
  found = inputs_lib.expand(arguments, options.folder_labels)
  label_ids = _label_ids(found.labels, export.class_names)
  if not found.paths and not found.problems:
    raise UserError(f'no image files in {" ".join(arguments)}')
  console = writers.Console(export.class_names, options.top_k)
  writer = console
  if options.output:
    writer = writers.Both(writers.FileWriter(options.output, export.class_names, options.top_k,
                                             found.labels is not None), console)
  n = len(found.paths)
  summary = Summary(classified=0, failed=0, skipped=found.skipped, seconds=0.0)
  if label_ids is not None:
    summary.confusion = np.zeros((len(export.class_names),) * 2, np.int64)
  ticker = _Progress(n, clock)

  def label_of(i):
    return found.labels[i] if found.labels is not None else None

  def classified(i, probabilities):
    writer.result(found.paths[i], label_of(i), probabilities)
    summary.classified += 1
    if label_ids is not None:
      summary.confusion[label_ids[i], int(np.argmax(probabilities))] += 1

  def failed_in_pipeline(i):
    image, failure = reading.diagnose(found.paths[i], export.image_shape, export.max_pixels)
    if image is not None:  # A passing failure (a flaky read): it decodes now.
      classified(i, export.classify(image[None]).numpy()[0])
      return
    writer.error(found.paths[i], label_of(i), failure.status, failure.message)
    summary.failed += 1

  try:
    for argument, why in found.problems:
      writer.error(argument, None, 'NOT_FOUND', why)
      summary.failed += 1
    next_index = 0
    for indices, images in reading.batches(found.paths, export.image_shape, export.max_pixels,
                                           options.batch_size):
      probabilities = export.classify(images).numpy()
      for index, row in zip(indices, probabilities):
        for missing in range(next_index, index):
          failed_in_pipeline(missing)
        classified(index, row)
        next_index = index + 1
      ticker.update(next_index)
    for missing in range(next_index, n):
      failed_in_pipeline(missing)
  finally:
    writer.close()
  summary.seconds = clock() - start
  return summary


def report(summary: Summary, class_names: Sequence[str]) -> None:
  """The end of the job: counts, rate and, with folder labels, accuracy and confusion."""
  rate = summary.classified / summary.seconds if summary.seconds else 0.0
  text = (f'classified {summary.classified:,} files in {summary.seconds:.1f}s '
          f'({rate:.0f} files/s)')
  if summary.failed:
    text += f'; {summary.failed:,} could not be classified (the error lines above)'
  if summary.skipped:
    text += (f'; {summary.skipped:,} other files in the folders skipped (not '
             f'{", ".join(inputs_lib.EXTENSIONS)})')
  logs.log(logging.INFO, text, {'event': 'predict_summary', 'classified': summary.classified,
                                'failed': summary.failed, 'skipped': summary.skipped})
  if summary.confusion is None:
    return
  counts = summary.confusion
  logs.log(logging.INFO, f'accuracy {summary.accuracy or 0.0:.4f} against the class folders '
           f'({int(counts.sum()):,} images)', {'event': 'predict_accuracy',
                                               'accuracy': summary.accuracy})
  for line in confusion_lines(counts, class_names):
    logs.log(logging.INFO, line)


def confusion_lines(counts: np.ndarray, class_names: Sequence[str]) -> List[str]:
  """The confusion matrix as text: a row per true class (its folder), a column per
  predicted class, and each row's accuracy."""
  corner = 'folder \\ predicted'
  first = max(len(corner), *(len(name) for name in class_names))
  width = max(6, *(len(name) for name in class_names))
  lines = [corner.ljust(first) + ''.join(f' {name:>{width}}' for name in class_names) +
           '  accuracy']
  for i, (name, row) in enumerate(zip(class_names, counts)):
    share = f'{row[i] / row.sum():.4f}' if row.sum() else '-'
    lines.append(name.ljust(first) + ''.join(f' {c:>{width}}' for c in row) + f'  {share}')
  return lines
