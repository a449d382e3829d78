"""Builds a Vertex AI custom job for the trainer's image and submits it with gcloud.

  python -m launch.vertex --project=P --region=us-central1 --image=IMAGE --bucket=B \
      [--workers=2] [--dry_run] [-- extra trainer flags]

With --tune it submits a hyperparameter tuning job whose trials are such custom jobs
(launch/vertex_tuning.py: --metric, --param, --algorithm, --max_trials, --parallel_trials).

Worker pool 0 is the chief and pool 1 holds the other workers; Vertex AI sets TF_CONFIG
on every replica from these pools (the chief as task "chief"), so the image's entry
point, `python -m trainer.main`, needs nothing else. With --dry_run the job spec and the
gcloud command are printed and nothing is submitted.
"""

import copy
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid

from launch import cli
from launch import vertex_tuning
from launch.cli import bucket_name
from launch.local import JOB_ID_VARIABLE
from trainer.core.errors import EXIT_USER_ERROR


def trainer_args(args) -> list:
  # No --model_dir: Vertex AI sets AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and
  # AIP_TENSORBOARD_LOG_DIR under the job's base output directory, and the trainer uses them.
  # JSON lines become Cloud Logging entries with a severity and queryable fields.
  return [f'--flagfile={args.preset}',
          f'--data_dir=gs://{bucket_name(args.bucket)}/tensorflow_datasets', '--log_format=json',
          *args.trainer_args]


def output_dir(args) -> str:
  # The same folder on every rerun of the same --name: a rerun resumes from its checkpoints.
  return f'gs://{bucket_name(args.bucket)}/runs/{args.name}'


def job_spec(args) -> dict:
  """The CustomJobSpec (the body `gcloud ai custom-jobs create --config` takes)."""
  machine = {'machineType': args.machine_type}
  if args.accelerator_count:
    machine.update(acceleratorType=args.accelerator_type,
                   acceleratorCount=args.accelerator_count)
  # One id per submission, the same on every replica and every restart of this job: a
  # restarted chief may take over the run folder's lease its dead predecessor held
  # (trainer/run_folder/run_lock.py), while another job on the same folder may not.
  container = {'imageUri': args.image, 'args': trainer_args(args),
               'env': [{'name': JOB_ID_VARIABLE, 'value': f'{args.name}-{uuid.uuid4().hex}'}]}
  # Each pool gets its own copy: the tuning job appends to each pool's args.
  pools = [{'machineSpec': dict(machine), 'replicaCount': 1,
            'containerSpec': copy.deepcopy(container)}]
  if args.workers > 1:
    pools.append({'machineSpec': dict(machine), 'replicaCount': args.workers - 1,
                  'containerSpec': copy.deepcopy(container)})
  spec = {
      'workerPoolSpecs': pools,
      'baseOutputDirectory': {'outputUriPrefix': output_dir(args)},
  }
  if args.workers > 1:
    # A lost worker fails the others (trainer exit 69); restarting the whole job, rather
    # than the one replica, forms a new cluster that resumes from the last checkpoint.
    spec['scheduling'] = {'restartJobOnWorkerRestart': True}
  return spec


def gcloud_command(args, config_path: str) -> list:
  command = ['gcloud', 'ai', 'custom-jobs', 'create', f'--region={args.region}',
             f'--display-name={args.name}', f'--config={config_path}']
  if args.project:
    command.insert(4, f'--project={args.project}')
  return command


def parse_args(argv):
  parser = cli.parser('python -m launch.vertex', __doc__)
  parser.add_argument('--project', default='', help='Google Cloud project (default: gcloud\'s)')
  parser.add_argument('--region', default='us-central1')
  parser.add_argument('--image', required=True, help='the trainer image, as pushed')
  parser.add_argument('--bucket', required=True,
                      help='GCS bucket for data (tensorflow_datasets/) and runs (runs/NAME)')
  parser.add_argument('--name', default='',
                      help='job display name and output folder (gs://BUCKET/runs/NAME); '
                           'default cifar10-multi-worker, with --tune cifar10-tuning')
  parser.add_argument('--workers', type=int, default=2, help='machines, chief included')
  parser.add_argument('--machine_type', default='n1-standard-16')
  parser.add_argument('--accelerator_type', default='NVIDIA_TESLA_T4')
  parser.add_argument('--accelerator_count', type=int, default=4,
                      help='GPUs per machine; 0 for CPU only')
  parser.add_argument('--preset', default='configs/multi_worker.cfg',
                      help='flagfile inside the image (relative to its /app)')
  parser.add_argument('--dry_run', action='store_true',
                      help='print the job spec and the gcloud command; submit nothing')
  vertex_tuning.add_arguments(parser)
  args = cli.parse(parser, argv)
  args.name = args.name or ('cifar10-tuning' if args.tune else 'cifar10-multi-worker')
  vertex_tuning.check(args, parser)
  if args.workers < 1:
    parser.error(f'--workers must be at least 1, got {args.workers}')
  if args.accelerator_count < 0:
    parser.error(f'--accelerator_count must not be negative, got {args.accelerator_count}')
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  spec = job_spec(args)
  command = gcloud_command
  if args.tune:
    spec, command = vertex_tuning.tuning_job(args, spec), vertex_tuning.gcloud_command
  text = json.dumps(spec, indent=2) + '\n'  # JSON is YAML: gcloud reads it as is.
  if args.dry_run:
    print(text, end='')
    print('# submit with:', shlex.join(command(args, 'SPEC.json')))
    return 0
  if shutil.which('gcloud') is None:
    print('error: gcloud is not on PATH; install the Google Cloud CLI, or use --dry_run and '
          'submit the printed spec yourself', file=sys.stderr)
    return EXIT_USER_ERROR
  with tempfile.NamedTemporaryFile('w', suffix='.json', prefix='vertex-job-') as f:
    f.write(text)
    f.flush()
    return subprocess.run(command(args, f.name), check=False).returncode


if __name__ == '__main__':
  sys.exit(main())
