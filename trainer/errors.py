"""The one exception type that means "the user asked for something we cannot do".

`trainer.main` turns it into a single line on stderr and a non-zero exit, so every
check that a user can trip raises this instead of letting a library traceback out.
"""

# Exit codes a scheduler or a wrapper script can rely on.
EXIT_USER_ERROR = 2


class UserError(Exception):
  """Bad flags, paths, data or environment: the message says what to do."""
