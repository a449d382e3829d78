"""Preemption on Google Cloud: SIGTERM where the GCE metadata server answers.

TensorFlow's PreemptionCheckpointHandler asks the metadata server whether it runs on Google
Cloud, and there stops catching SIGTERM (trainer/run_folder/preemption.py says how). A local
stand-in server, named by GCE_METADATA_IP as TensorFlow reads it, makes this machine such a
place. TensorFlow tells a GPU VM from a CPU VM by its own devices, not by the metadata, so
here it is a CPU VM: the case where the handler does nothing at all.
"""

import http.server
import signal
import subprocess
import sys
import threading

import pytest
import tensorflow as tf
from tensorflow.python.distribute.failure_handling import failure_handling_util

from launch.local import worker_env
from tests import forked
from tests.conftest import REPO, free_ports, start_endless_workers
from tests.process_output import Lines
from trainer.core.errors import EXIT_PREEMPTED
from trainer.run_folder import preemption

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('preemption')]

# What TensorFlow 2.21 asks (failure_handling_util.py): on_gcp() reads the host name,
# the GPU VM watcher polls the maintenance event. NONE: no maintenance is coming.
_ANSWERS = {'/computeMetadata/v1/instance/hostname': 'trainer-test.c.project.internal',
            '/computeMetadata/v1/instance/maintenance-event': 'NONE'}


class _Metadata(http.server.BaseHTTPRequestHandler):

  def do_GET(self):  # pylint: disable=invalid-name
    answer = _ANSWERS.get(self.path)
    if answer is None or self.headers.get('Metadata-Flavor') != 'Google':
      self.send_error(404 if answer is None else 403)
      return
    body = answer.encode()
    self.send_response(200)
    self.send_header('Metadata-Flavor', 'Google')
    self.send_header('Content-Type', 'application/text')
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):  # pylint: disable=arguments-differ
    pass


@pytest.fixture(scope='module')
def metadata_env():
  """The environment that points TensorFlow at the stand-in metadata server."""
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Metadata)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  yield {'GCE_METADATA_IP': f'127.0.0.1:{server.server_address[1]}'}
  server.shutdown()
  server.server_close()


def test_the_stand_in_is_google_cloud_to_tensorflow_but_not_to_the_handler_we_build(
    metadata_env, monkeypatch):
  if tf.config.list_physical_devices('GPU'):
    pytest.skip('TensorFlow would see a GCE GPU VM here')
  monkeypatch.setenv('GCE_METADATA_IP', metadata_env['GCE_METADATA_IP'])
  platforms = failure_handling_util.PlatformDevice
  assert failure_handling_util.detect_platform() is platforms.GCE_CPU
  with preemption._without_google_cloud_detection():  # pylint: disable=protected-access
    assert failure_handling_util.detect_platform() is platforms.INTERNAL_CPU
  assert failure_handling_util.detect_platform() is platforms.GCE_CPU  # Put back.


def _saved_step(output):
  last = output.strip().splitlines()[-1]
  assert last.startswith('stopped: preempted: checkpoint saved at step '), output[-3000:]
  return int(last.split('step ')[1].split(';')[0])


def _stop_one(processes, index, signum, after):
  """Waits for line `after` on every worker, signals worker `index`; returns each worker's
  exit code and output."""
  outputs = [Lines(p.stderr) for p in processes]
  try:
    for output in outputs:
      output.wait_for(after, timeout=240)
    processes[index].send_signal(signum)
    codes = [p.wait(timeout=120) for p in processes]
    return codes, [output.rest() for output in outputs]
  finally:
    for p in processes:
      p.kill()
      p.wait()


def test_sigterm_to_one_worker_on_google_cloud_stops_all_at_one_saved_step_and_rerun_resumes(
    tmp_path, metadata_env):
  codes, outputs = _stop_one(start_endless_workers(tmp_path, env=metadata_env), 1,
                             signal.SIGTERM, 'step 50/100000')
  assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], outputs[0][-2000:] + outputs[1][-2000:]
  steps = {_saved_step(output) for output in outputs}
  assert len(steps) == 1, steps
  step = steps.pop()
  assert tf.train.latest_checkpoint(str(tmp_path / 'preemption')).endswith(f'ckpt-{step}')

  # The rerun continues from that step; Ctrl-C to the chief this time stops both again.
  codes, outputs = _stop_one(start_endless_workers(tmp_path, env=metadata_env), 0,
                             signal.SIGINT, f'step {step + 10}/100000')
  assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], outputs[0][-2000:] + outputs[1][-2000:]
  for output in outputs:
    assert f'resumed from step {step} ' in output
    progress = [line for line in output.splitlines() if '/100000  loss' in line]
    assert f'step {step + 10}/100000' in progress[0]
  later = {_saved_step(output) for output in outputs}
  assert len(later) == 1 and later.pop() > step


def test_sigterm_to_a_one_worker_job_on_google_cloud_saves_and_exits_restartably(
    tmp_path, metadata_env):
  # One worker has no peer to agree with: it saves by itself, as single-process runs do.
  env = dict(worker_env([f'localhost:{free_ports(1)[0]}'], 0), **metadata_env)
  command = [sys.executable, '-m', 'trainer.main', '--strategy=multi_worker',
             '--dataset=synthetic', f'--model_dir={tmp_path}', '--train_steps=100000',
             '--steps_per_loop=10', '--checkpoint_every_steps=0']
  process = forked.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
  codes, outputs = _stop_one([process], 0, signal.SIGTERM, 'step 20/100000')
  assert codes == [EXIT_PREEMPTED], outputs[0][-3000:]
  step = _saved_step(outputs[0])
  assert tf.train.latest_checkpoint(str(tmp_path / 'checkpoints')).endswith(f'ckpt-{step}')
