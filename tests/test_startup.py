"""The start of a multi-worker job: a worker whose peers do not come says so, stops on a
signal at once, and gives up after --startup_timeout (trainer/core/startup.py)."""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from launch.local import worker_env
from tests import forked
from tests.conftest import REPO, free_ports
from tests.process_output import Lines
from trainer.core import startup
from trainer.core.errors import EXIT_PEER_LOST, StartupEnded, UserError


def _tf_config(hosts, index, job='worker'):
  return {'cluster': {job: hosts}, 'task': {'type': job, 'index': index}}


def test_peers_are_the_chief_and_the_other_workers_and_an_evaluator_waits_for_none():
  config = {'cluster': {'chief': ['c:1'], 'worker': ['w0:2', 'w1:3'], 'evaluator': ['e:4']},
            'task': {'type': 'worker', 'index': 1}}
  assert startup.peers(config) == [startup.Peer('chief', 'c:1'), startup.Peer('worker 0', 'w0:2')]
  config['task'] = {'type': 'evaluator', 'index': 0}
  assert startup.peers(config) == []


def test_workers_that_all_wait_see_each_other():
  hosts = [f'localhost:{port}' for port in free_ports(3)]
  errors, servers = [], []

  def worker(index):
    try:
      startup.wait_for_workers(_tf_config(hosts, index), timeout_s=60)
      # As TensorFlow's server does next: the others may not have seen this one yet.
      servers.append(socket.create_server(('', int(hosts[index].split(':')[1]))))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=90)
  for server in servers:
    server.close()
  assert not errors and not any(t.is_alive() for t in threads), errors


def test_a_port_held_by_another_program_is_one_line():
  hosts = [f'localhost:{port}' for port in free_ports(2)]
  with socket.create_server(('', int(hosts[0].split(':')[1]))):
    with pytest.raises(UserError, match=r'cannot listen on port \d+, the port of this worker '
                       r'\(worker 0\)'):
      startup.wait_for_workers(_tf_config(hosts, 0), timeout_s=5)


class _OnLine(logging.Handler):
  """Sends this process `signum` once a waiting line is logged."""

  def __init__(self, signum):
    super().__init__()
    self.signum, self.lines = signum, []

  def emit(self, record):
    self.lines.append(record.getMessage())
    os.kill(os.getpid(), self.signum)


def test_ctrl_c_ends_the_wait_with_one_line_and_puts_the_handlers_back():
  hosts = [f'localhost:{port}' for port in free_ports(2)]
  handler = _OnLine(signal.SIGINT)
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.INFO)
  logger.addHandler(handler)
  before = signal.getsignal(signal.SIGINT)
  try:
    with pytest.raises(StartupEnded) as raised:
      startup.wait_for_workers(_tf_config(hosts, 0), timeout_s=60, report_every_s=0.5)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  assert f'waiting for worker 1 ({hosts[1]}) to start' in handler.lines[0]
  assert str(raised.value) == (f'SIGINT while waiting for worker 1 ({hosts[1]}) to start; '
                               'nothing was trained')
  assert raised.value.exit_code == 128 + signal.SIGINT
  assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_a_worker_started_alone_names_the_missing_one_and_stops_on_sigterm_or_timeout(tmp_path):
  # Two jobs of two workers, whose worker 1 nobody starts: one stopped by SIGTERM, one by
  # its --startup_timeout.
  ports = free_ports(4)
  hosts, other_hosts = ([f'localhost:{port}' for port in ports[i:i + 2]] for i in (0, 2))
  command = [sys.executable, '-m', 'trainer.main', '--strategy=multi_worker',
             '--dataset=synthetic', '--train_steps=10']
  waiting, timed_out = (
      forked.Popen([*command, f'--model_dir={tmp_path / name}', *extra], cwd=REPO,
                   env=dict(worker_env(job, 0), **{startup.REPORT_SECONDS_ENV: '1'}),
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      for name, job, extra in (('waiting', hosts, []),
                               ('timed_out', other_hosts, ['--startup_timeout=3'])))
  try:
    output = Lines(waiting.stderr)
    output.wait_for(rf'waiting for worker 1 \({hosts[1]}\) to start: \d+ s so far, giving up '
                    r'after 30 min \(--startup_timeout\)', timeout=120)
    waiting.send_signal(signal.SIGTERM)
    assert waiting.wait(timeout=60) == 128 + signal.SIGTERM
    lines = output.rest().splitlines()
    last_wait = max(i for i, line in enumerate(lines) if 's so far, giving up' in line)
    assert lines[last_wait + 1:] == [f'stopped: SIGTERM while waiting for worker 1 '
                                     f'({hosts[1]}) to start; nothing was trained'], lines

    assert timed_out.wait(timeout=120) == EXIT_PEER_LOST
    text = Lines(timed_out.stderr).rest()
    assert 'Traceback' not in text
    assert text.strip().splitlines()[-1] == (
        f'stopped: worker 1 ({other_hosts[1]}) never answered within 3 s (--startup_timeout=3); '
        'start every worker of TF_CONFIG\'s cluster, or fix the addresses it gives them')
  finally:
    for process in (waiting, timed_out):
      process.kill()
      process.wait()
