"""`python -m trainer.predict --model=RUN/export PATH...`: classify image files in bulk.

PATH is a file, a folder (walked recursively), a glob or a gs:// prefix. Each file gets a
line: the file, its top --top_k classes and their probabilities, or its error; with
--output, the lines go to a JSON Lines or CSV file. The files are decoded, converted and
resized as the export's serving_bytes signature does, under its pixel limit: what this
prints is what TF Serving or Vertex AI return for them. See trainer/prediction/.

Exit code: 0 when every file was classified, 3 when some could not be (each has its error
line), 2 for bad flags or an unusable export.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from trainer.core.errors import EXIT_SOME_FAILED, EXIT_USER_ERROR, UserError
from trainer.report import logs

_MODEL = flags.DEFINE_string('model', None, 'SavedModel folder written by training '
                             '(<model_dir>/export), or the run folder (or a Vertex AI job\'s '
                             'base output folder) whose export to use.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Images per call of the model; files '
                                   'are read and decoded in parallel ahead of it.')
_TOP_K = flags.DEFINE_integer('top_k', 1, 'Classes (and probabilities) given per file, the '
                              'most likely first.')
_OUTPUT = flags.DEFINE_string('output', '', 'Write every file\'s line to this .jsonl (Vertex '
                              'AI batch prediction\'s format) or .csv file instead of the '
                              'console; local or gs://.')
_FOLDER_LABELS = flags.DEFINE_bool('folder_labels', False, 'The PATHs are folders of class '
                                   'folders, as a training split: also report the accuracy '
                                   'and the confusion matrix against the folder names.')
_MAX_PIXELS = flags.DEFINE_integer('max_pixels', None, 'Refuse files whose header declares '
                                   'more pixels (width x height); default: the export\'s '
                                   'limit (--export_max_pixels at training).')


def main(argv):
  logs.setup('absl' if flags.FLAGS.verbosity > 0 else 'text', flags.FLAGS.verbosity)
  # pylint: disable=g-import-not-at-top  (these import TensorFlow)
  from trainer.prediction import exports
  from trainer.prediction import job
  from trainer.run_folder import locate
  try:
    if not _MODEL.value:
      raise UserError('--model is required: the export folder of a run (<model_dir>/export)')
    if len(argv) < 2:
      raise UserError('nothing to classify: python -m trainer.predict --model=DIR PATH... '
                      '(files, folders, globs or gs:// prefixes)')
    # An export, or a run that has one wherever its export went.
    export = exports.load(locate.export_folder(_MODEL.value, '--model'), _MAX_PIXELS.value)
    options = job.Options(batch_size=_BATCH_SIZE.value, top_k=_TOP_K.value,
                          output=_OUTPUT.value, folder_labels=_FOLDER_LABELS.value)
    summary = job.run(export, argv[1:], options)
    job.report(summary, export.class_names)
  except UserError as e:
    logs.plain_line(f'error: {e}', 'ERROR')
    sys.exit(EXIT_USER_ERROR)
  if summary.failed:
    sys.exit(EXIT_SOME_FAILED)


if __name__ == '__main__':
  app.run(main)
