"""A stand-in `gcloud` for the launchers' tests: first on PATH, it records each call's
arguments (and any --config file and scp'd tarball) and exits with $FAKE_GCLOUD_EXIT.

Use the `gcloud` fixture by importing it into a test module."""

import os
import stat

from absl import flags
import pytest

from tests.conftest import REPO
from trainer import flags as trainer_flags

_FAKE_GCLOUD = '''#!/bin/sh
# Records each call: its arguments, one per line, then any --config file and scp'd tarball.
dir="$(dirname "$0")"
n=$(ls "$dir"/call-* 2>/dev/null | wc -l)
printf '%s\\n' "$@" > "$dir/call-$n"
for arg in "$@"; do
  case "$arg" in
    --config=*) cp "${arg#--config=}" "$dir/config-$n" ;;
    *.tar.gz) [ -f "$arg" ] && cp "$arg" "$dir/tarball-$n" ;;
  esac
done
exit "${FAKE_GCLOUD_EXIT:-0}"
'''


@pytest.fixture
def gcloud(tmp_path, monkeypatch):
  """A recording gcloud first on PATH; returns a function listing the calls made."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  script = bin_dir / 'gcloud'
  script.write_text(_FAKE_GCLOUD)
  script.chmod(script.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  return lambda: [(bin_dir / f'call-{i}').read_text().splitlines()
                  for i in range(len(list(bin_dir.glob('call-*'))))]


def parse_trainer_flags(args, monkeypatch):
  """The Config the trainer makes of these command-line flags."""
  monkeypatch.chdir(REPO)  # Presets are named relative to the checkout (the image's /app).
  values = flags.FlagValues()
  trainer_flags.define_flags(values)
  values(['trainer', *args])
  return trainer_flags.config_from_flags(values)
