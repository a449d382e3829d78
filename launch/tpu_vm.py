"""Creates a Cloud TPU VM, runs the trainer on it with gs:// data and run folders, deletes it.

  python -m launch.tpu_vm create --name=NAME --zone=ZONE [--accelerator_type=v4-8] [--pod]
  python -m launch.tpu_vm run    --name=NAME --zone=ZONE --bucket=BUCKET [--pod] [-- flags]
  python -m launch.tpu_vm delete --name=NAME --zone=ZONE

Each step is a list of gcloud commands; --dry_run prints them instead of running them.
`run` copies this checkout to every host of the TPU and installs the pinned packages there,
but not TensorFlow: the TPU VM image brings the TPU build of it (choose the image matching
our pin with --version). It then starts the trainer on worker 0 only: TPUStrategy is
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


def pinned_tensorflow() -> str:
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    match = re.search(r'^tensorflow==(\S+)$', f.read(), re.MULTILINE)
  return match.group(1)


def default_version(pod: bool) -> str:
  """The TPU VM image for our TensorFlow pin: tpu-vm-tf-X.Y.Z[-pod]-pjrt."""
  return f'tpu-vm-tf-{pinned_tensorflow()}{"-pod" if pod else ""}-pjrt'


def _gcloud(args, *words) -> list:
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', *words, f'--zone={args.zone}']
  if args.project:
    command.append(f'--project={args.project}')
  return command


def create_commands(args) -> list:
  return [_gcloud(args, 'create', args.name, f'--accelerator-type={args.accelerator_type}',
                  f'--version={args.version or default_version(args.pod)}')]


def delete_commands(args) -> list:
  return [_gcloud(args, 'delete', args.name, '--quiet')]


def trainer_command(args) -> str:
  bucket = cli.bucket_name(args.bucket)
  if args.pod:
    # On a pod slice the client finds the other hosts through the TPU's name; the
    # worker-0 process must not claim the local TPU chips itself (the TPU runtime does).
    prefix, tpu = 'TPU_LOAD_LIBRARY=0 ', f'--tpu={args.name}'
  else:
    prefix, tpu = '', '--tpu=local'
  flags = ['--flagfile=configs/tpu.cfg', f'--data_dir=gs://{bucket}/tensorflow_datasets',
           f'--model_dir=gs://{bucket}/runs/{args.name}', tpu, *args.trainer_args]
  return f'cd ~/{_REMOTE_DIR} && {prefix}python3 -m trainer.main {shlex.join(flags)}'


def setup_command() -> str:
  # Every pin but tensorflow: pip would replace the image's TPU build with the PyPI one.
  return (f'rm -rf ~/{_REMOTE_DIR} && mkdir ~/{_REMOTE_DIR} && '
          f'tar -xzf ~/{_REMOTE_TARBALL} -C ~/{_REMOTE_DIR} && cd ~/{_REMOTE_DIR} && '
          "grep -v '^tensorflow==' requirements.txt > requirements-tpu.txt && "
          'python3 -m pip install --quiet -r requirements-tpu.txt')


def run_commands(args, tarball: str) -> list:
  return [
      _gcloud(args, 'scp', tarball, f'{args.name}:~/{_REMOTE_TARBALL}', '--worker=all'),
      _gcloud(args, 'ssh', args.name, '--worker=all', f'--command={setup_command()}'),
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
  parser.add_argument('--accelerator_type', default='v4-8')
  parser.add_argument('--pod', action='store_true',
                      help='the accelerator type spans several hosts (a pod slice)')
  parser.add_argument('--version', default='',
                      help='TPU VM image (default: tpu-vm-tf-<our TF pin>[-pod]-pjrt)')
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
