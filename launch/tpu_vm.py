"""Creates a Cloud TPU VM, runs the trainer on it with gs:// data and run folders, deletes it.

  python -m launch.tpu_vm create --name=NAME --zone=ZONE [--accelerator_type=v4-8] [--pod]
  python -m launch.tpu_vm run    --name=NAME --zone=ZONE --bucket=BUCKET [--pod] [-- flags]
  python -m launch.tpu_vm delete --name=NAME --zone=ZONE

Each step is a list of gcloud commands; --dry_run prints them instead of running them.
Two routes, each with its own TensorFlow (launch/README.md, "Which TensorFlow runs where"):
- one host (v4-8, v5litepod-8, v5p-8, v6e-8 and smaller): Google's base image of the TPU
  generation, then TensorFlow's TPU wheel and our other pins from
  launch/tpu/requirements-vm.txt; the trainer drives the chips with --tpu=local;
- a pod slice (--pod: several hosts): Google's TensorFlow image for multi-host slices, whose
  TensorFlow and TPU server run on every host, plus launch/tpu/requirements-pod.txt on
  worker 0. TPUStrategy is single-client: the one process on worker 0 finds the hosts
  through --tpu=NAME and drives them all.
Data and the run folder must be on GCS because the TPU hosts, not only worker 0, read and
write them.
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
VM_REQUIREMENTS = 'launch/tpu/requirements-vm.txt'
POD_REQUIREMENTS = 'launch/tpu/requirements-pod.txt'
# What a TPU host needs to run `python -m trainer.main` from the copy.
_SHIPPED = ('trainer', 'configs', VM_REQUIREMENTS, POD_REQUIREMENTS)
_REMOTE_TARBALL = 'cifar10-trainer.tar.gz'
_REMOTE_DIR = 'cifar10-trainer'

# Google's TPU software versions with TensorFlow are tpu-vm-tf-X.Y.Z[-pod][-pjrt]; `-pod`
# is for multi-host slices, and only those images run TensorFlow's TPU server on each
# host. The newest is TensorFlow 2.18.0's (https://cloud.google.com/tpu/docs/runtimes).
POD_TENSORFLOW = '2.18.0'
POD_VERSION = f'tpu-vm-tf-{POD_TENSORFLOW}-pod-pjrt'
# Google's TPU software versions without a framework, by the accelerator type's prefix
# (v5e slices are `v5litepod-N`); v4 and older share one.
_BASE_IMAGES = (('v6e', 'v2-alpha-tpuv6e'), ('v5p', 'v2-alpha-tpuv5'),
                ('v5litepod', 'v2-alpha-tpuv5-lite'))
_OLDER_BASE_IMAGE = 'tpu-ubuntu2204-base'
# Accelerator types are GENERATION-N. N counts TensorCores for v2, v3, v4 and v5p (8 on one
# host: 4 chips of 2 cores, or 4 v5p chips) and chips for v5e and v6e (8 chips on one
# host): above 8, the slice spans several hosts (cloud.google.com/tpu/docs/v4, v5e, v5p,
# v6e).
_GENERATIONS = ('v2', 'v3', 'v4', 'v5p', 'v5litepod', 'v6e')
_PER_HOST = 8
_DEFAULT_TYPE = 'v4-8'


def default_version(accelerator_type: str, pod: bool = False) -> str:
  """The TPU software version `create` starts: Google's TensorFlow pod image for a pod
  slice, else the base image of the accelerator type's TPU generation."""
  if pod:
    return POD_VERSION
  for prefix, image in _BASE_IMAGES:
    if accelerator_type.startswith(prefix + '-'):
      return image
  return _OLDER_BASE_IMAGE


def hosts(accelerator_type: str) -> int:
  """How many TPU VM hosts a slice of this type has; ValueError for an unknown type."""
  match = re.fullmatch(r'(v\w+)-(\d+)', accelerator_type)
  if not match or match.group(1) not in _GENERATIONS or int(match.group(2)) < 1:
    raise ValueError(f'--accelerator_type={accelerator_type} is not a TPU type this launcher '
                     f'knows ({", ".join(g + "-N" for g in _GENERATIONS)}, e.g. v4-8)')
  return -(-int(match.group(2)) // _PER_HOST)


def check_accelerator_type(accelerator_type: str, pod: bool) -> str:
  """'' when --pod fits the type, else the one line that says what to use instead."""
  try:
    count = hosts(accelerator_type)
  except ValueError as e:
    return str(e)
  generation = accelerator_type.split('-')[0]
  if count > 1 and not pod:
    return (f'--accelerator_type={accelerator_type} spans {count} hosts: add --pod (to '
            f'create and run) for Google\'s TensorFlow pod image {POD_VERSION}, or use a '
            f'single-host type such as {generation}-8')
  if count == 1 and pod:
    return (f'--pod is for slices of several hosts, and {accelerator_type} has one: drop '
            f'--pod, or use a type above {generation}-8')
  return ''


def _gcloud(args, *words) -> list:
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', *words, f'--zone={args.zone}']
  if args.project:
    command.append(f'--project={args.project}')
  return command


def create_commands(args) -> list:
  accelerator_type = args.accelerator_type or _DEFAULT_TYPE
  return [_gcloud(args, 'create', args.name, f'--accelerator-type={accelerator_type}',
                  f'--version={args.version or default_version(accelerator_type, args.pod)}')]


def delete_commands(args) -> list:
  return [_gcloud(args, 'delete', args.name, '--quiet')]


def trainer_command(args) -> str:
  bucket = cli.bucket_name(args.bucket)
  if args.pod:
    # Google's route for TensorFlow on a pod slice: worker 0 alone runs the program with
    # TPU_LOAD_LIBRARY=0, so that it does not claim its own chips (the TPU server, which
    # the pod image runs on every host, has them), and names the TPU, whose hosts
    # TPUClusterResolver then gets from the Cloud TPU API.
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


def setup_command(pod: bool) -> str:
  """Unpacks the copy and installs the route's requirement file: on one host TensorFlow's
  TPU wheel with our other pins; on a pod slice only what goes with the image's TensorFlow."""
  requirements = POD_REQUIREMENTS if pod else VM_REQUIREMENTS
  return (f'rm -rf ~/{_REMOTE_DIR} && mkdir ~/{_REMOTE_DIR} && '
          f'tar -xzf ~/{_REMOTE_TARBALL} -C ~/{_REMOTE_DIR} && cd ~/{_REMOTE_DIR} && '
          f'python3 -m pip install --quiet -r {requirements}')


def run_commands(args, tarball: str) -> list:
  # A pod slice's other hosts run the image's TPU server only: the copy goes to worker 0.
  workers = '--worker=0' if args.pod else '--worker=all'
  return [
      _gcloud(args, 'scp', tarball, f'{args.name}:~/{_REMOTE_TARBALL}', workers),
      _gcloud(args, 'ssh', args.name, workers, f'--command={setup_command(args.pod)}'),
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
  parser.add_argument('--accelerator_type', default='',
                      help=f'e.g. v4-8, v5litepod-8 (v5e), v5p-8, v6e-8; more than 8 (cores '
                      f'for v4 and v5p, chips for v5e and v6e) needs --pod (create: default '
                      f'{_DEFAULT_TYPE}; run: checked against --pod when given)')
  parser.add_argument('--pod', action='store_true',
                      help='the accelerator type spans several hosts (a pod slice)')
  parser.add_argument('--version', default='',
                      help=f'TPU software version (default: {POD_VERSION} with --pod, else '
                      f'Google\'s base image of the TPU generation)')
  parser.add_argument('--bucket', default='', help='GCS bucket for data and runs (run)')
  parser.add_argument('--dry_run', action='store_true', help='print the gcloud commands only')
  args = cli.parse(parser, argv)
  if args.step == 'run' and not args.bucket:
    parser.error('run needs --bucket: the TPU hosts read data from and write the run to GCS')
  if args.step == 'create' or (args.step == 'run' and args.accelerator_type):
    problem = check_accelerator_type(args.accelerator_type or _DEFAULT_TYPE, args.pod)
    if problem:
      parser.error(problem)
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
