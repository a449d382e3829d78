"""The Cloud TPU routes: what `launch.tpu_vm` would run for one host and for a pod slice
(against a stand-in gcloud, tests/fake_gcloud.py), which types it refuses without or with
--pod, and that each route's requirement file holds requirements.txt's pins except those
the route's TensorFlow replaces. Runs under every TensorFlow a route installs
(`make test-tpu-versions`): it needs nothing but the trainer and pytest.
"""

import re
import tarfile

import pytest

from launch import tpu_vm
from tests.conftest import REPO
from tests.fake_gcloud import gcloud, parse_trainer_flags  # pylint: disable=unused-import

pytestmark = pytest.mark.tpu_path

_PIN = re.compile(r'^([A-Za-z0-9_.\[\]-]+)==(\S+)$', re.MULTILINE)


def _pins(path):
  return dict(_PIN.findall((REPO / path).read_text()))


def _dry_run(capsys, *argv):
  assert tpu_vm.main([*argv, '--dry_run']) == 0
  return [line[2:] for line in capsys.readouterr().out.splitlines() if line.startswith('+ ')]


def test_single_host_run_copies_installs_the_tpu_wheel_and_trains_from_worker_0(
    gcloud, tmp_path, monkeypatch):
  assert tpu_vm.main(['run', '--name=tpu1', '--zone=z', '--bucket=gs://bkt', '--',
                      '--epochs=2']) == 0
  scp, setup, train = gcloud()
  assert scp[:4] == ['compute', 'tpus', 'tpu-vm', 'scp'] and '--worker=all' in scp
  with tarfile.open(tmp_path / 'bin' / 'tarball-0') as tar:
    names = set(tar.getnames())
  assert {'trainer/main.py', 'configs/tpu.cfg', tpu_vm.VM_REQUIREMENTS,
          tpu_vm.POD_REQUIREMENTS} <= names
  assert not any('__pycache__' in name for name in names)
  assert setup[3:6] == ['ssh', 'tpu1', '--worker=all']
  assert setup[6].split(' && ')[-1] == \
      'python3 -m pip install --quiet -r launch/tpu/requirements-vm.txt'
  assert train[3:6] == ['ssh', 'tpu1', '--worker=0']
  command = train[6][len('--command='):]
  assert 'TPU_LOAD_LIBRARY' not in command
  # One host: TensorFlow drives the chips through PJRT, libtpu loaded as a pluggable device.
  assert ' NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH="$(python3 -c ' \
      "'import libtpu; print(libtpu.get_library_path())')\" python3 -m trainer.main " in command
  trainer_args = command.split('python3 -m trainer.main ')[1].split()
  assert trainer_args[-2:] == ['--tpu=local', '--epochs=2']
  config = parse_trainer_flags(trainer_args, monkeypatch)
  assert config.strategy == 'tpu' and config.mixed_precision == 'auto'  # bfloat16 on a TPU.
  assert config.data_dir == 'gs://bkt/tensorflow_datasets'
  assert config.model_dir == 'gs://bkt/runs/tpu1'


def test_single_host_create_and_run_commands(capsys):
  assert _dry_run(capsys, 'create', '--name=one', '--zone=us-central2-b') == [
      'gcloud compute tpus tpu-vm create one --accelerator-type=v4-8 '
      '--version=tpu-ubuntu2204-base --zone=us-central2-b']
  commands = _dry_run(capsys, 'run', '--name=one', '--zone=us-central2-b', '--bucket=bkt',
                      '--accelerator_type=v5litepod-8')
  # The scp'd tarball is packed in a fresh scratch folder.
  commands[0] = re.sub(r' \S+/cifar10-trainer.tar.gz ', ' TARBALL ', commands[0])
  assert commands == [
      "gcloud compute tpus tpu-vm scp TARBALL 'one:~/cifar10-trainer.tar.gz' --worker=all "
      '--zone=us-central2-b',
      "gcloud compute tpus tpu-vm ssh one --worker=all '--command=rm -rf ~/cifar10-trainer && "
      'mkdir ~/cifar10-trainer && tar -xzf ~/cifar10-trainer.tar.gz -C ~/cifar10-trainer && '
      'cd ~/cifar10-trainer && python3 -m pip install --quiet -r '
      "launch/tpu/requirements-vm.txt' --zone=us-central2-b",
      "gcloud compute tpus tpu-vm ssh one --worker=0 '--command=cd ~/cifar10-trainer && "
      'NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH="$(python3 -c '
      "'\"'\"'import libtpu; print(libtpu.get_library_path())'\"'\"')\" python3 -m trainer.main "
      '--flagfile=configs/tpu.cfg --data_dir=gs://bkt/tensorflow_datasets '
      "--model_dir=gs://bkt/runs/one --tpu=local' --zone=us-central2-b"]


def test_pod_slice_create_and_run_follow_googles_tensorflow_pod_route(capsys):
  # Google's TensorFlow image for multi-host slices (tpu-vm-tf-X.Y.Z-pod-pjrt), then on
  # worker 0 only: TPU_LOAD_LIBRARY=0 and the TPU's name.
  assert _dry_run(capsys, 'create', '--name=big', '--zone=z', '--accelerator_type=v4-32',
                  '--pod') == [
      'gcloud compute tpus tpu-vm create big --accelerator-type=v4-32 '
      '--version=tpu-vm-tf-2.18.0-pod-pjrt --zone=z']
  scp, setup, train = _dry_run(capsys, 'run', '--name=big', '--zone=z', '--bucket=bkt',
                               '--accelerator_type=v4-32', '--pod', '--project=p')
  assert scp.endswith("'big:~/cifar10-trainer.tar.gz' --worker=0 --zone=z --project=p")
  assert setup.startswith('gcloud compute tpus tpu-vm ssh big --worker=0 ')
  assert 'python3 -m pip install --quiet -r launch/tpu/requirements-pod.txt' in setup
  assert train == (
      "gcloud compute tpus tpu-vm ssh big --worker=0 '--command=cd ~/cifar10-trainer && "
      'TPU_LOAD_LIBRARY=0 python3 -m trainer.main --flagfile=configs/tpu.cfg '
      '--data_dir=gs://bkt/tensorflow_datasets --model_dir=gs://bkt/runs/big '
      "--tpu=big' --zone=z --project=p")
  assert tpu_vm.POD_VERSION == f'tpu-vm-tf-{tpu_vm.POD_TENSORFLOW}-pod-pjrt'


@pytest.mark.parametrize('accelerator_type,count', [
    ('v2-8', 1), ('v3-32', 4), ('v4-8', 1), ('v4-16', 2), ('v4-32', 4),
    ('v5litepod-1', 1), ('v5litepod-8', 1), ('v5litepod-16', 2), ('v5litepod-256', 32),
    ('v5p-8', 1), ('v5p-16', 2), ('v5p-128', 16), ('v6e-4', 1), ('v6e-8', 1), ('v6e-16', 2)])
def test_hosts_of_each_accelerator_type(accelerator_type, count):
  assert tpu_vm.hosts(accelerator_type) == count


@pytest.mark.parametrize('step', ['create', 'run'])
@pytest.mark.parametrize('accelerator_type', ['v4-32', 'v5litepod-16', 'v5p-16', 'v6e-16'])
def test_a_multi_host_type_without_pod_is_refused_in_one_line(capsys, step, accelerator_type):
  with pytest.raises(SystemExit) as exit_:
    tpu_vm.main([step, '--name=t', '--zone=z', '--bucket=b', '--dry_run',
                 f'--accelerator_type={accelerator_type}'])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  generation = accelerator_type.split('-')[0]
  assert err == (f'error: --accelerator_type={accelerator_type} spans '
                 f'{tpu_vm.hosts(accelerator_type)} hosts: add --pod (to create and run) for '
                 "Google's TensorFlow pod image tpu-vm-tf-2.18.0-pod-pjrt, or use a "
                 f'single-host type such as {generation}-8\n')


@pytest.mark.parametrize('argv,message', [
    (['--accelerator_type=v5p-8', '--pod'],
     'error: --pod is for slices of several hosts, and v5p-8 has one: drop --pod'),
    (['--pod'], 'error: --pod is for slices of several hosts, and v4-8 has one'),
    (['--accelerator_type=v9x-8'], 'error: --accelerator_type=v9x-8 is not a TPU type this '
     'launcher knows (v2-N, v3-N, v4-N, v5p-N, v5litepod-N, v6e-N, e.g. v4-8)'),
    (['--accelerator_type=v4'], 'error: --accelerator_type=v4 is not a TPU type'),
])
def test_create_refuses_what_does_not_fit(capsys, argv, message):
  with pytest.raises(SystemExit) as exit_:
    tpu_vm.main(['create', '--name=t', '--zone=z', '--dry_run', *argv])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(message) and err.count('\n') == 1, err


def test_run_with_pod_and_no_type_trusts_the_flag(capsys):
  # `run` does not see the slice; with --accelerator_type it checks it like `create`.
  assert 'TPU_LOAD_LIBRARY=0' in _dry_run(capsys, 'run', '--name=big', '--zone=z',
                                          '--bucket=b', '--pod')[-1]


@pytest.mark.parametrize('accelerator_type,image', [
    ('v2-8', 'tpu-ubuntu2204-base'), ('v4-8', 'tpu-ubuntu2204-base'),
    ('v5litepod-8', 'v2-alpha-tpuv5-lite'), ('v5p-8', 'v2-alpha-tpuv5'),
    ('v6e-4', 'v2-alpha-tpuv6e')])
def test_one_host_starts_from_the_base_image_of_its_generation(accelerator_type, image):
  # TensorFlow 2.21 has no tpu-vm-tf image (Google's list ends at 2.18.0): a base image,
  # then the TPU wheel.
  assert tpu_vm.default_version(accelerator_type) == image
  assert tpu_vm.default_version(accelerator_type, pod=True) == tpu_vm.POD_VERSION


def test_the_image_can_be_chosen(capsys):
  (create,) = _dry_run(capsys, 'create', '--name=t', '--zone=z',
                       '--version=tpu-vm-tf-2.18.0-pjrt')
  assert '--version=tpu-vm-tf-2.18.0-pjrt' in create


def test_tpu_steps_stop_at_the_first_failing_gcloud(gcloud, monkeypatch):
  monkeypatch.setenv('FAKE_GCLOUD_EXIT', '3')
  assert tpu_vm.main(['run', '--name=t', '--zone=z', '--bucket=b']) == 3
  assert len(gcloud()) == 1


def test_tpu_delete(gcloud):
  assert tpu_vm.main(['delete', '--name=t', '--zone=z', '--project=p']) == 0
  assert gcloud() == [['compute', 'tpus', 'tpu-vm', 'delete', 't', '--quiet', '--zone=z',
                       '--project=p']]


def test_each_route_keeps_the_pins_its_tensorflow_does_not_replace():
  base = _pins('requirements.txt')
  vm, pod = _pins(tpu_vm.VM_REQUIREMENTS), _pins(tpu_vm.POD_REQUIREMENTS)
  # One host: the TPU wheel (2.21 has none), its TensorBoard and the libtpu it loads.
  assert {k: v for k, v in vm.items() if k not in base} == {'tensorflow-tpu': '2.20.0',
                                                             'libtpu': '0.0.14'}
  assert vm['tensorboard'] == '2.20.0'
  assert {k: v for k, v in base.items() if k not in ('tensorflow', 'tensorboard')} == \
      {k: v for k, v in vm.items() if k in base and k != 'tensorboard'}
  # A pod slice: no TensorFlow (the image's), the TensorBoard and metadata it goes with, and
  # the Cloud TPU API client libraries --tpu=NAME needs.
  assert 'tensorflow' not in pod and not any(k.startswith('tensorflow-tpu') for k in pod)
  assert pod['tensorboard'] == '2.18.0' and pod['tensorflow-metadata'] == '1.16.1'
  assert {'google-api-python-client', 'oauth2client'} <= set(pod)
  assert {k: v for k, v in base.items() if k not in ('tensorflow', 'tensorboard')} == \
      {k: v for k, v in pod.items() if k in base and k != 'tensorboard'}


def test_the_makefile_builds_the_pod_route_with_the_images_tensorflow():
  makefile = (REPO / 'Makefile').read_text()
  assert f'POD_TENSORFLOW := {tpu_vm.POD_TENSORFLOW}\n' in makefile
  assert '-r launch/tpu/requirements-vm.txt' in makefile
  assert '-r launch/tpu/requirements-pod.txt' in makefile


def test_the_makefile_runs_every_file_with_tpu_path_tests():
  makefile = (REPO / 'Makefile').read_text()
  listed = re.search(r'^TPU_PATH_TESTS := ((?:.*\\\n)*.*)$', makefile, re.MULTILINE).group(1)
  listed = set(listed.replace('\\', ' ').split())
  marked = {f'tests/{path.name}' for path in (REPO / 'tests').glob('test_*.py')
            if 'tpu_path' in path.read_text()}
  assert listed == marked
