"""Creates a Cloud TPU VM, runs the trainer on it with gs:// data and run folders, deletes it.

  python -m launch.tpu_vm create --name=NAME --zone=ZONE [--accelerator_type=v4-8] [--pod]
  python -m launch.tpu_vm run    --name=NAME --zone=ZONE --bucket=BUCKET [--pod] [-- flags]
  python -m launch.tpu_vm delete --name=NAME --zone=ZONE

Each step is a list of gcloud commands; --dry_run prints them instead of running them.
`create` starts Google's base image of the TPU generation; `run` copies this checkout to
every host of the TPU and installs TensorFlow's TPU build (tensorflow-tpu with its libtpu)
and our other pins there. It then starts the trainer on worker 0 only: TPUStrategy is
single-client, the one process drives every host of a pod slice. Data and the run folder
must be on GCS because the TPU hosts, not only worker 0, read and write them.
"""

import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile

from launch import cli
from trainer.core.errors import EXIT_USER_ERROR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a TPU host needs to run `python -m trainer.main` from the copy.
_SHIPPED = ('trainer', 'configs', 'requirements.txt')
_REMOTE_TARBALL = 'cifar10-trainer.tar.gz'
_REMOTE_DIR = 'cifar10-trainer'


# TensorFlow 2.21 has no TPU build. Google's TPU software versions for TensorFlow (the
# tpu-vm-tf-X.Y.Z[-pod]-pjrt images, with TensorFlow installed) end at 2.18.0, and
# TensorFlow's TPU wheel, tensorflow-tpu, at 2.20.0 on PyPI. So a TPU VM starts from the
# plain base image of its generation and gets the newest TPU wheel, as Google's own
# TensorFlow release tests on TPUs do: `pip install tensorflow-tpu==X -f <libtpu index>`,
# whose index holds the libtpu builds matching each TensorFlow.
TPU_TENSORFLOW = '2.20.0'
LIBTPU_INDEX = 'https://storage.googleapis.com/libtpu-tf-releases/index.html'
# Google's TPU software versions without a framework, by the accelerator type's prefix
# (v5e slices are `v5litepod-N`); v4 and older share one.
_BASE_IMAGES = (('v6e', 'v2-alpha-tpuv6e'), ('v5p', 'v2-alpha-tpuv5'),
                ('v5litepod', 'v2-alpha-tpuv5-lite'))
_OLDER_BASE_IMAGE = 'tpu-ubuntu2204-base'
# Our pins the TPU wheel replaces: TensorFlow itself, and the TensorBoard it requires
# (tensorflow-tpu 2.20 needs tensorboard~=2.20.0; TensorFlow 2.21 needs none).
_REPLACED_PINS = ('tensorflow', 'tensorboard')


def pinned_tensorflow() -> str:
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    match = re.search(r'^tensorflow==(\S+)$', f.read(), re.MULTILINE)
  return match.group(1)


def default_version(accelerator_type: str) -> str:
  """Google's base TPU VM image for the accelerator type's TPU generation."""
  for prefix, image in _BASE_IMAGES:
    if accelerator_type.startswith(prefix + '-'):
      return image
  return _OLDER_BASE_IMAGE


def _gcloud(args, *words) -> list:
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', *words, f'--zone={args.zone}']
  if args.project:
    command.append(f'--project={args.project}')
  return command


def create_commands(args) -> list:
  return [_gcloud(args, 'create', args.name, f'--accelerator-type={args.accelerator_type}',
                  f'--version={args.version or default_version(args.accelerator_type)}')]


def delete_commands(args) -> list:
  return [_gcloud(args, 'delete', args.name, '--quiet')]


def trainer_command(args) -> str:
  bucket = cli.bucket_name(args.bucket)
  if args.pod:
    # On a pod slice the client finds the other hosts through the TPU's name; the
    # worker-0 process must not claim the local TPU chips itself (the TPU runtime does).
    prefix, tpu = 'TPU_LOAD_LIBRARY=0 ', f'--tpu={args.name}'
  else:
    # One host drives its chips through PJRT: TensorFlow loads libtpu as a pluggable
    # device (tensorflow/__init__.py reads TF_PLUGGABLE_DEVICE_LIBRARY_PATH) through its
    # C API, as Google's TensorFlow TPU tests set it up.
    prefix = ('NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH='
              '"$(python3 -c \'import libtpu; print(libtpu.get_library_path())\')" ')
    tpu = '--tpu=local'
  flags = ['--flagfile=configs/tpu.cfg', f'--data_dir=gs://{bucket}/tensorflow_datasets',
           f'--model_dir=gs://{bucket}/runs/{args.name}', tpu, *args.trainer_args]
  return f'cd ~/{_REMOTE_DIR} && {prefix}python3 -m trainer.main {shlex.join(flags)}'


def setup_command(tensorflow_tpu: str = TPU_TENSORFLOW) -> str:
  # The TPU wheel and every pin but those it replaces, in one pip call so that they agree.
  drop = ' '.join(f"-e '^{name}=='" for name in _REPLACED_PINS)
  return (f'rm -rf ~/{_REMOTE_DIR} && mkdir ~/{_REMOTE_DIR} && '
          f'tar -xzf ~/{_REMOTE_TARBALL} -C ~/{_REMOTE_DIR} && cd ~/{_REMOTE_DIR} && '
          f'grep -v {drop} requirements.txt > requirements-tpu.txt && '
          f'python3 -m pip install --quiet -f {LIBTPU_INDEX} '
          f'tensorflow-tpu=={tensorflow_tpu} -r requirements-tpu.txt')


def run_commands(args, tarball: str) -> list:
  return [
      _gcloud(args, 'scp', tarball, f'{args.name}:~/{_REMOTE_TARBALL}', '--worker=all'),
      _gcloud(args, 'ssh', args.name, '--worker=all',
              f'--command={setup_command(args.tensorflow_tpu)}'),
      _gcloud(args, 'ssh', args.name, '--worker=0', f'--command={trainer_command(args)}'),
  ]


def pack(path: str) -> None:
  with tarfile.open(path, 'w:gz') as tar:
    for name in _SHIPPED:
      tar.add(os.path.join(REPO, name), arcname=name,
              filter=lambda info: None if '__pycache__' in info.name else info)


def parse_args(argv):
  parser = cli.parser('python -m launch.tpu_vm', __doc__)
  parser.add_argument('step', choices=('create', 'run', 'delete'))
  parser.add_argument('--name', required=True, help='TPU VM name (also the run folder name)')
  parser.add_argument('--zone', required=True, help='a zone that has the accelerator type')
  parser.add_argument('--project', default='', help='Google Cloud project (default: gcloud\'s)')
  parser.add_argument('--accelerator_type', default='v4-8',
                      help='e.g. v4-8, v5litepod-8 (v5e), v5p-8, v6e-8')
  parser.add_argument('--pod', action='store_true',
                      help='the accelerator type spans several hosts (a pod slice)')
  parser.add_argument('--version', default='',
                      help='TPU VM image (default: Google\'s base image of the TPU generation)')
  parser.add_argument('--tensorflow_tpu', default=TPU_TENSORFLOW,
                      help='the tensorflow-tpu version to install (TensorFlow 2.21 has none)')
  parser.add_argument('--bucket', default='', help='GCS bucket for data and runs (run)')
  parser.add_argument('--dry_run', action='store_true', help='print the gcloud commands only')
  args = cli.parse(parser, argv)
  if args.step == 'run' and not args.bucket:
    parser.error('run needs --bucket: the TPU hosts read data from and write the run to GCS')
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  with tempfile.TemporaryDirectory() as scratch:
    tarball = os.path.join(scratch, _REMOTE_TARBALL)
    if args.step == 'create':
      commands = create_commands(args)
    elif args.step == 'delete':
      commands = delete_commands(args)
    else:
      commands = run_commands(args, tarball)
      if not args.dry_run:
        pack(tarball)
    for command in commands:
      print('+', shlex.join(command), flush=True)
      if args.dry_run:
        continue
      try:
        code = subprocess.run(command, check=False).returncode
      except FileNotFoundError:
        print('error: gcloud is not on PATH; install the Google Cloud CLI', file=sys.stderr)
        return EXIT_USER_ERROR
      if code:
        return code
  return 0


if __name__ == '__main__':
  sys.exit(main())
