"""Container entry point of a Kubernetes Indexed Job (the one a JobSet runs, in
launch/k8s/multi_worker.yaml): derives TF_CONFIG, then runs the trainer.

`python -m launch.k8s_entrypoint [trainer flags...]`. Kubernetes gives each pod of an
Indexed Job its index (JOB_COMPLETION_INDEX) and, with the Job's `subdomain` naming a
headless Service, a stable DNS name `<job>-<index>.<service>`. From those and the
variables below (set in launch/k8s/multi_worker.yaml) every pod builds the same cluster
and its own task, so no pod needs to know another's IP address.

  TRAINER_JOB_NAME     the Job's name
  TRAINER_SERVICE      the headless Service (the pods' subdomain)
  TRAINER_NUM_WORKERS  the Job's completions (= parallelism)
  TRAINER_PORT         the port every task listens on (default 2222)
  TRAINER_WITH_CHIEF   "true": index 0 is a "chief" task, the others "worker" 0, 1, ...
"""

import json
import os
import sys
from typing import Mapping

from launch import tf_config
from trainer.core.errors import EXIT_USER_ERROR
from trainer.report import logs

DEFAULT_PORT = 2222


class SetupError(Exception):
  pass


def _required(env: Mapping[str, str], name: str) -> str:
  value = env.get(name, '')
  if not value:
    raise SetupError(f'{name} is not set; run this entry point as a pod of the Indexed Job in '
                     'launch/k8s/multi_worker.yaml')
  return value


def _integer(env: Mapping[str, str], name: str, default=None) -> int:
  raw = env.get(name) or (str(default) if default is not None else _required(env, name))
  try:
    return int(raw)
  except ValueError:
    raise SetupError(f'{name} must be a whole number, got {raw!r}') from None


def tf_config_from_env(env: Mapping[str, str]) -> dict:
  """TF_CONFIG for this pod; raises SetupError naming the variable that is missing or wrong."""
  job = _required(env, 'TRAINER_JOB_NAME')
  service = _required(env, 'TRAINER_SERVICE')
  num_workers = _integer(env, 'TRAINER_NUM_WORKERS')
  index = _integer(env, 'JOB_COMPLETION_INDEX')
  port = _integer(env, 'TRAINER_PORT', DEFAULT_PORT)
  with_chief = env.get('TRAINER_WITH_CHIEF', '').lower() in ('1', 'true', 'yes')
  if num_workers < 1:
    raise SetupError(f'TRAINER_NUM_WORKERS must be at least 1, got {num_workers}')
  if not 0 <= index < num_workers:
    raise SetupError(f'JOB_COMPLETION_INDEX={index} is outside 0..{num_workers - 1}; '
                     'TRAINER_NUM_WORKERS must equal the Job\'s completions')
  hosts = [f'{job}-{i}.{service}:{port}' for i in range(num_workers)]
  return tf_config.tf_config(hosts, index, with_chief)


def main(argv) -> None:
  log_format = logs.requested_format(argv[1:])  # Our lines in the trainer's format.
  try:
    config = tf_config_from_env(os.environ)
  except SetupError as e:
    logs.plain_line(f'error: {e}', 'ERROR', log_format)
    sys.exit(EXIT_USER_ERROR)
  os.environ['TF_CONFIG'] = json.dumps(config)
  logs.plain_line(f'TF_CONFIG task {config["task"]["type"]}:{config["task"]["index"]} of '
                  f'{sum(len(v) for v in config["cluster"].values())}', 'INFO', log_format)
  # exec, not a child process: the trainer takes this process's place, so the SIGTERM
  # Kubernetes sends before evicting a pod reaches its checkpoint-on-preemption handling
  # directly instead of stopping a wrapper that would leave it running.
  os.execv(sys.executable, [sys.executable, '-m', 'trainer.main', *argv[1:]])


if __name__ == '__main__':
  main(sys.argv)
