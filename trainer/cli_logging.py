"""Console logging for the command-line tools: our progress lines, the libraries' warnings."""

import logging as std_logging
import os

from absl import logging

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class _OwnInfoOnly(std_logging.Filter):
  """Keeps warnings and errors from everywhere, INFO only from this package."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


def quiet_libraries(verbosity: int) -> None:
  """At the default verbosity, drops library INFO lines (one per all-reduce trace, per
  checkpoint shard, per export step) that bury the progress lines; -v 1 keeps them."""
  if verbosity <= 0:
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
    std_logging.getLogger('tensorflow').setLevel(std_logging.WARNING)
