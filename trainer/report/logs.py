"""How the trainer's output looks: `--log_format=text` (people), `json` (Cloud Logging), `absl`.

text: `HH:MM:SS  message`, with `WARNING:`/`ERROR:` before those, and `[worker N]` in
multi-worker runs. json: one object per line with Cloud Logging's special fields
(`severity`, `message`, `time`, `logging.googleapis.com/labels`, `.../sourceLocation`) and a
record's structured fields (`log(..., fields={...})`) as numbers. absl: absl's own prefix.

Python logging (absl, TensorFlow's Python logger, captured `warnings`) goes through one
handler. TensorFlow's C++ code writes its own lines straight to file descriptor 2, so in
text and json mode that descriptor (and 1, for json) is a pipe whose reader rewrites such
lines into the chosen format; this module imports no TensorFlow, so `setup` runs first.
"""

import atexit
import datetime
import fcntl
import json
import logging
import math
import os
import re
import sys
import threading
import time
from typing import Optional

from trainer.core.accelerators import NVIDIA_DRIVER  # Imports no TensorFlow.

FORMATS = ('text', 'json', 'absl')
# The trainer package, all of whose modules' INFO lines are shown (this file is in report/).
_PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '')
# Set by a launcher that already puts `[worker N]` before every line it relays.
PREFIXED_ENV = 'TRAINER_LOG_PREFIXED'
# Cloud Logging's LogSeverity names for Python's levels (absl's -v 2 and up log below DEBUG).
_SEVERITY = ((logging.CRITICAL, 'CRITICAL'), (logging.ERROR, 'ERROR'),
             (logging.WARNING, 'WARNING'), (logging.INFO, 'INFO'), (1, 'DEBUG'))
# TensorFlow's C++ lines: absl's `I0000 00:00:1795956083.974381    3291 port.cc:153] msg`
# and TensorFlow's older `2024-11-29 11:52:14.610798: W tensorflow/core/x.cc:12] msg`.
_NATIVE_LINE = (re.compile(r'^([IWEF])\d{4} [\d:.]+\s+\d+ (\S+:\d+)\] ?(.*)$'),
                re.compile(r'^\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) (\S+:\d+)\] ?(.*)$'))
_NATIVE_LEVEL = {'I': logging.INFO, 'W': logging.WARNING, 'E': logging.ERROR,
                 'F': logging.CRITICAL}
_F_SETPIPE_SZ = 1031  # linux/fcntl.h
# absl's C++ note that it was not initialised: true of every TensorFlow program, says nothing.
_NATIVE_NOISE = 'WARNING: All log messages before absl::InitializeLog() is called'
# TensorFlow's CUDA probe logs this as an error on every machine without an NVIDIA driver:
# there it only means "no GPU here, running on the CPU". Where the driver is loaded, the
# same line means the GPU cannot be used, and it stays an error.
_CUDA_PROBE = 'failed call to cuInit'
# XLA compiles a function's Asserts away and warns once per Assert: a compiled eval step has
# several (the confusion matrix's range checks), and the warning asks nothing of anyone.
_XLA_ASSERT = 'Ignoring Assert operator'
# A function or an input pipeline whose op failed logs this before the error reaches Python,
# which reports it (or, in trainer.predict, names the file and the reason); so does
# TensorFlow's JPEG decoder for a cut file, before its error says the same.
_FAILED_OP = ('Local rendezvous is aborting with status', 'Premature end of JPEG data')
# libjpeg prints its decoding errors and warnings as bare lines on stderr (its default
# output_message); TensorFlow's error for the file says the same, and trainer.predict and
# image folders name the file with it. The starts of the decoder's messages in jerror.h.
_LIBJPEG = re.compile(
    r'^(Corrupt JPEG data|Premature end of (JPEG|input) file|Improper call to JPEG library|'
    r'Invalid JPEG file structure|Not a JPEG file|Unsupported (JPEG process|marker|color '
    r'conversion)|Bogus (Huffman|DAC|marker|input colorspace|virtual array|message code|'
    r'sampling factors|buffer control mode|DQT index|DHT index|progression parameters|'
    r'JPEG colorspace)|Input file read error|Huffman table 0x|Quantization table 0x|'
    r'Invalid component ID|Invalid SOS parameters|Invalid crop request|Empty JPEG image|'
    r'Unexpected marker|Warning: unknown JFIF|Scan script does not|Inconsistent progression|'
    r'Arithmetic table 0x|Sampling factors too large|Maximum supported image dimension|'
    r'Component index \d+: mismatching sampling|Didn\'t expect more than one scan|'
    r'Invalid memory pool code|Image too wide|Unsupported JPEG data precision|'
    r'JPEG datastream contains no image|Wrong JPEG library version)')


class _State:
  format = 'absl'  # What trainer.main chose; absl's (untouched) until then.
  worker: Optional[str] = None  # 'worker 1', 'chief', or None outside multi-worker runs.
  prefixed = False


_state = _State()


def set_worker(label: Optional[str]) -> None:
  """Marks every following line as written by this worker (None: a single-worker run)."""
  _state.worker = label


def log(level: int, message: str, fields: Optional[dict] = None) -> None:
  """Logs `message`; in json mode `fields` (numbers, strings) become fields of the entry."""
  logging.getLogger('trainer').log(level, '%s', message, extra={'fields': fields or {}},
                                   stacklevel=2)


def json_line(severity: str, message: str, fields: Optional[dict] = None,
              created: Optional[float] = None) -> str:
  entry = {'severity': severity, 'message': message,
           'time': datetime.datetime.fromtimestamp(
               time.time() if created is None else created, datetime.timezone.utc)
           .isoformat(timespec='microseconds').replace('+00:00', 'Z')}
  if _state.worker:
    entry['worker'] = _state.worker
    entry['logging.googleapis.com/labels'] = {'worker': _state.worker}
  for name, value in (fields or {}).items():
    # NaN and infinities are not JSON numbers: a log parser would drop the whole line.
    entry[name] = None if isinstance(value, float) and not math.isfinite(value) else value
  return json.dumps(entry, ensure_ascii=False, default=str)


def plain_line(text: str, severity: str = 'INFO', log_format: Optional[str] = None) -> None:
  """A line on stderr outside logging: as it is, or as JSON. For a run's last word
  (`error: ...`, which stays unadorned in text mode) and for launchers' own lines."""
  line = json_line(severity, text) if (log_format or _state.format) == 'json' else text
  sys.stdout.flush()
  print(line, file=sys.stderr, flush=True)


def requested_format(argv) -> str:
  """--log_format from raw arguments, for errors found before absl has parsed them."""
  for i, arg in enumerate(argv):
    if arg.startswith('--log_format='):
      return arg.split('=', 1)[1]
    if arg == '--log_format' and i + 1 < len(argv):
      return argv[i + 1]
  return 'text'


class TextFormatter(logging.Formatter):
  """`HH:MM:SS  [worker N] WARNING: message`; every line of a long message gets the time."""

  def format(self, record):
    message = record.getMessage()
    if record.name == 'py.warnings':  # 'file:line: Category: text' plus the source line.
      message = message.strip().splitlines()[0]
    if record.exc_info:
      message += '\n' + self.formatException(record.exc_info)
    head = time.strftime('%H:%M:%S', time.localtime(record.created)) + '  '
    if _state.worker and not _state.prefixed:
      head += f'[{_state.worker}] '
    if record.levelno != logging.INFO:
      head += f'{logging.getLevelName(record.levelno)}: '
    return '\n'.join(head + line for line in message.splitlines() or [''])


class JsonFormatter(logging.Formatter):
  """One Cloud Logging structured entry per record."""

  def format(self, record):
    message = record.getMessage()
    if record.exc_info:  # Error Reporting reads a stack trace from the message.
      message += '\n' + self.formatException(record.exc_info)
    fields = dict(getattr(record, 'fields', None) or {})
    if record.pathname:  # A C++ line's is its `file.cc:line`.
      location = {'file': record.pathname, 'line': str(record.lineno),
                  'function': record.funcName}
      fields['logging.googleapis.com/sourceLocation'] = {k: v for k, v in location.items() if v}
    severity = next((name for level, name in _SEVERITY if record.levelno >= level), 'DEFAULT')
    return json_line(severity, message, fields, record.created)


class _OwnInfoOnly(logging.Filter):
  """Keeps warnings and errors from everywhere, INFO only from this package."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


class _Relay:
  """Turns what is written to a file descriptor into lines of the chosen format."""

  def __init__(self, fd: int, handler: logging.Handler, verbose: bool):
    self._fd, self._handler, self._verbose = fd, handler, verbose
    self._saved = os.dup(fd)  # Where the lines finally go: the original stream.
    self._out = os.fdopen(os.dup(self._saved), 'w', encoding='utf-8', errors='replace')
    read_end, write_end = os.pipe()
    try:  # C++ code may write while holding the GIL the reader needs: a roomy pipe.
      fcntl.fcntl(write_end, _F_SETPIPE_SZ, 1 << 20)
    except OSError:  # Not Linux, or over the system's limit: the default 64 KiB.
      pass
    os.dup2(write_end, fd)
    os.close(write_end)
    self._thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True,
                                    name=f'log-relay-{fd}')
    self._thread.start()

  def _pump(self, read_end):
    pending = ''
    with os.fdopen(read_end, 'rb', buffering=0) as pipe:
      while True:
        chunk = pipe.read(65536)
        if not chunk:
          break
        pending += chunk.decode('utf-8', errors='replace')
        # Text mode passes a progress bar's redraws (\r) on as they come; json waits for the
        # line's end and keeps what a terminal would show.
        ends = r'(?<=[\r\n])' if _state.format == 'text' else r'(?<=\n)'
        *lines, pending = re.split(ends, pending)
        for line in lines:
          self._line(line)
    if pending:
      self._line(pending + '\n')

  def _line(self, line: str) -> None:
    text = line.rstrip('\r\n')
    if _state.format == 'text' and line.endswith('\r'):
      self._write(line)  # A progress bar redrawing itself: pass it on as it is.
      return
    text = text.rsplit('\r', 1)[-1]
    if not self._verbose and (text.startswith(_NATIVE_NOISE) or _LIBJPEG.match(text)):
      return
    record = _native_record(text)
    if record is not None:
      if self._verbose or record.levelno >= logging.WARNING:
        self._write(self._handler.format(record) + '\n')
    elif _state.format == 'json' and not _is_json_object(text):
      record = logging.LogRecord('native', 0, '', 0, text, None, None)  # DEFAULT severity.
      self._write(self._handler.format(record) + '\n')
    else:  # Our own lines, already formatted, and plain output in text mode.
      self._write(text + '\n')

  def _write(self, text: str) -> None:
    self._out.write(text)
    self._out.flush()

  def stop(self):
    os.dup2(self._saved, self._fd)  # Closes the pipe's last write end: the pump sees EOF.
    self._thread.join(timeout=5)  # Longer only if a child process still holds the pipe.
    if not self._thread.is_alive():
      self._out.close()
      os.close(self._saved)


def _native_record(text: str) -> Optional[logging.LogRecord]:
  for pattern in _NATIVE_LINE:
    match = pattern.match(text)
    if match:
      level, where, message = match.groups()
      path, line = where.rsplit(':', 1)
      level = _NATIVE_LEVEL[level]
      if message.startswith(_CUDA_PROBE) and not os.path.exists(NVIDIA_DRIVER):
        level = logging.INFO
        message = f'no NVIDIA driver on this machine: TensorFlow uses the CPU ({message})'
      elif message.startswith((_XLA_ASSERT,) + _FAILED_OP):
        level = logging.INFO
      return logging.LogRecord('native', level, path, int(line), message, None, None)
  return None


def _is_json_object(text: str) -> bool:
  if not text.startswith('{'):
    return False
  try:
    return isinstance(json.loads(text), dict)
  except ValueError:
    return False


def setup(log_format: str, verbosity: int) -> None:
  """Installs `log_format` for the whole process; call once, before importing TensorFlow.

  `-v 1` and above keeps every library's INFO lines (and, unless a format was asked for,
  absl's own format); by default only this package's INFO lines and everyone's warnings.
  """
  _state.format = log_format
  _state.prefixed = os.environ.get(PREFIXED_ENV) == '1'
  verbose = verbosity > 0
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  root = logging.getLogger()
  if log_format == 'absl':
    handler = absl_logging.get_absl_handler()
  else:
    root.removeHandler(absl_logging.get_absl_handler())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == 'json' else TextFormatter())
    root.addHandler(handler)
    logging.captureWarnings(True)  # Python warnings become WARNING records, formatted alike.
    sys.stdout.flush()
    sys.stderr.flush()
    relays = [_Relay(2, handler, verbose)]
    if log_format == 'json':  # Nothing but JSON may reach a log collector.
      relays.append(_Relay(1, handler, verbose))
    atexit.register(_stop, relays)
  if not verbose:
    # Library INFO lines (one per all-reduce trace, per checkpoint shard, per export step)
    # bury the progress lines.
    handler.addFilter(_OwnInfoOnly())
    logging.getLogger('tensorflow').setLevel(logging.WARNING)


def _stop(relays):
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  for relay in relays:
    relay.stop()
