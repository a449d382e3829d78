"""What the launch scripts' command lines share: one-line errors, trainer flags, buckets."""

import argparse

from trainer.core.errors import EXIT_USER_ERROR


def parser(prog: str, doc: str, **kwargs) -> argparse.ArgumentParser:
  """An ArgumentParser whose errors are one `error: ...` line and exit 2, like the trainer's."""
  result = argparse.ArgumentParser(prog=prog, description=doc.split('\n\n')[0], **kwargs)
  def error(message):
    if message.startswith('unrecognized arguments'):
      message += ' (trainer flags go after --)'
    result.exit(EXIT_USER_ERROR, f'error: {message}\n')
  result.error = error
  return result


def parse(parser_: argparse.ArgumentParser, argv) -> argparse.Namespace:
  """Parses the launcher's own flags; what follows `--` is left for the trainer in
  `.trainer_args` (split by hand: argparse's REMAINDER would also swallow our flags)."""
  argv = list(argv)
  split = argv.index('--') if '--' in argv else len(argv)
  args = parser_.parse_args(argv[:split])
  args.trainer_args = argv[split + 1:]
  return args


def bucket_name(value: str) -> str:
  """'gs://b/', 'gs://b' or 'b' -> 'b'."""
  return (value[len('gs://'):] if value.startswith('gs://') else value).strip('/')
