"""The TF_CONFIG each task of a multi-worker cluster gets, from one list of host:port.

Shared by the local launcher and the Kubernetes entry point so that both lay out the
cluster the same way MultiWorkerMirroredStrategy expects.
"""

from typing import Sequence


def cluster(hosts: Sequence[str], with_chief: bool = False) -> dict:
  """The "cluster" part: every task's address, by job name.

  With a chief, hosts[0] is the chief and the rest are workers 0, 1, ...; that is the layout
  Vertex AI uses. Without one, worker 0 acts as chief (tf.distribute's rule).
  """
  if not hosts:
    raise ValueError('a cluster needs at least one host')
  hosts = list(hosts)
  if with_chief:
    jobs = {'chief': hosts[:1]}
    if len(hosts) > 1:
      jobs['worker'] = hosts[1:]
    return jobs
  return {'worker': hosts}


def task(index: int, num_hosts: int, with_chief: bool = False) -> dict:
  """The "task" part for the process at position `index` of the host list."""
  if not 0 <= index < num_hosts:
    raise ValueError(f'task index {index} is out of range for {num_hosts} host(s)')
  if with_chief:
    return {'type': 'chief', 'index': 0} if index == 0 else {'type': 'worker', 'index': index - 1}
  return {'type': 'worker', 'index': index}


def tf_config(hosts: Sequence[str], index: int, with_chief: bool = False) -> dict:
  return {'cluster': cluster(hosts, with_chief),
          'task': task(index, len(hosts), with_chief)}
