"""The HyperparameterTuningJob of `python -m launch.vertex --tune`: a study, and its trials.

Each trial is the custom job that launch/vertex.py builds, with the trainer told to report
--metric after every evaluation (trainer/report/hypertune.py). Vertex AI passes each trial's
values as `--name value` arguments after the container's own, and gives each trial its own
folders under the job's output folder (`<output>/<trial id>/model`, ...), which the trainer
uses.

A parameter is `--param NAME=KIND:...`, NAME a trainer flag:
  NAME=double:MIN:MAX[:log]    a float range; `log` samples it on a log scale (for rates)
  NAME=integer:MIN:MAX[:log]   an integer range
  NAME=discrete:V1,V2,...      these numbers
  NAME=categorical:A,B,...     these strings (true,false for a boolean flag)
"""

import math

from trainer.core.config import Config, TUNE_METRICS

# Without --param: the rate, on a log scale as rates are, and the label smoothing.
DEFAULT_PARAMS = ('learning_rate=double:1e-4:3e-2:log', 'label_smoothing=double:0:0.2')
GOALS = {'eval_accuracy': 'MAXIMIZE', 'eval_loss': 'MINIMIZE'}
# Vertex AI's default algorithm (ALGORITHM_UNSPECIFIED) is its Bayesian optimization.
ALGORITHMS = {'bayesian': 'ALGORITHM_UNSPECIFIED', 'random': 'RANDOM_SEARCH',
              'grid': 'GRID_SEARCH'}
_GCLOUD_ALGORITHMS = {'ALGORITHM_UNSPECIFIED': 'algorithm-unspecified',
                      'RANDOM_SEARCH': 'random-search', 'GRID_SEARCH': 'grid-search'}
# Where a run reads and writes: the job sets those; tuning them would only scatter it.
_NOT_TUNABLE = ('model_dir', 'data_dir', 'tensorboard_dir', 'checkpoint_dir', 'export_dir',
                'tpu', 'tune_metric', 'tune_report', 'dataset', 'strategy')


def add_arguments(parser) -> None:
  parser.add_argument('--tune', action='store_true',
                      help='submit a hyperparameter tuning job of such custom jobs instead')
  parser.add_argument('--metric', choices=TUNE_METRICS, default='eval_accuracy',
                      help='with --tune: the metric to optimize (accuracy up, loss down)')
  parser.add_argument('--param', action='append', default=[], metavar='NAME=KIND:...',
                      help='with --tune: a trainer flag to tune (repeat for more): '
                           'double:MIN:MAX[:log], integer:MIN:MAX[:log], discrete:V1,V2,... '
                           f'or categorical:A,B,...; default: {" ".join(DEFAULT_PARAMS)}')
  parser.add_argument('--algorithm', choices=tuple(ALGORITHMS), default='bayesian',
                      help='with --tune: the search algorithm')
  parser.add_argument('--max_trials', type=int, default=8, help='with --tune: trials in all')
  parser.add_argument('--parallel_trials', type=int, default=2,
                      help='with --tune: trials running at once')
  parser.add_argument('--max_failed_trials', type=int, default=0,
                      help='with --tune: failed trials that fail the job; 0: Vertex AI decides')


def _number(text: str, kind: str):
  value = int(text) if kind == 'integer' else float(text)
  if not math.isfinite(value):
    raise ValueError(f'{text!r} is not a finite number')
  return value


def parse_param(text: str) -> dict:
  """`NAME=KIND:...` -> a StudySpec.ParameterSpec (JSON); ValueError saying what is wrong."""
  name, _, spec = text.partition('=')
  kind, _, rest = spec.partition(':')
  if name not in Config.__dataclass_fields__ or name in _NOT_TUNABLE:
    raise ValueError(f'--param {text!r}: {name!r} is not a trainer flag that can be tuned')
  parameter = {'parameterId': name}
  try:
    if kind in ('double', 'integer'):
      low, high, *scale = rest.split(':')
      low, high = _number(low, kind), _number(high, kind)
      if not low < high or scale not in ([], ['log']) or (scale and low <= 0):
        raise ValueError('want MIN:MAX with MIN < MAX, and MIN > 0 for :log')
      parameter[f'{kind}ValueSpec'] = {'minValue': low, 'maxValue': high}
      parameter['scaleType'] = 'UNIT_LOG_SCALE' if scale else 'UNIT_LINEAR_SCALE'
    elif kind == 'discrete':
      values = sorted({_number(v, kind) for v in rest.split(',')})
      parameter['discreteValueSpec'] = {'values': values}
    elif kind == 'categorical':
      values = [v for v in rest.split(',') if v]
      if len(values) < 2:
        raise ValueError('want two or more values')
      parameter['categoricalValueSpec'] = {'values': values}
    else:
      raise ValueError('KIND is one of double, integer, discrete, categorical')
  except ValueError as e:
    raise ValueError(f'--param {text!r}: {e}') from None
  return parameter


def check(args, parser) -> None:
  """parser.error()s for tuning settings no job could run (only with --tune)."""
  if not args.tune:
    return
  for name in ('max_trials', 'parallel_trials'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be at least 1, got {getattr(args, name)}')
  if args.max_failed_trials < 0:
    parser.error(f'--max_failed_trials must not be negative, got {args.max_failed_trials}')
  try:
    args.parameters = [parse_param(p) for p in args.param or DEFAULT_PARAMS]
  except ValueError as e:
    parser.error(str(e))
  names = [p['parameterId'] for p in args.parameters]
  if len(set(names)) < len(names):
    parser.error(f'a flag is tuned twice: {", ".join(names)}')
  if args.algorithm == 'grid' and any('doubleValueSpec' in p for p in args.parameters):
    # Vertex AI's grid search takes only integer, discrete and categorical parameters.
    parser.error('--algorithm=grid needs integer, discrete or categorical parameters only')


def tuning_job(args, trial_job_spec: dict) -> dict:
  """The HyperparameterTuningJob (the body `gcloud ai hp-tuning-jobs create --config` takes)."""
  for pool in trial_job_spec['workerPoolSpecs']:
    # Asked for, not left to the trainer spotting a trial in its environment.
    pool['containerSpec']['args'] += [f'--tune_metric={args.metric}', '--tune_report']
  return {
      'displayName': args.name,
      'studySpec': {
          'metrics': [{'metricId': args.metric, 'goal': GOALS[args.metric]}],
          'parameters': args.parameters,
          'algorithm': ALGORITHMS[args.algorithm],
          # The trainer keeps the best evaluation's weights (best/): rank by that one.
          'measurementSelectionType': 'BEST_MEASUREMENT',
      },
      'maxTrialCount': args.max_trials,
      'parallelTrialCount': args.parallel_trials,
      'maxFailedTrialCount': args.max_failed_trials,
      'trialJobSpec': trial_job_spec,
  }


def gcloud_command(args, config_path: str) -> list:
  # The counts and the algorithm again as flags, the same as the file's: gcloud documents
  # its own defaults for these flags (1 trial), and its flags win over the file.
  command = ['gcloud', 'ai', 'hp-tuning-jobs', 'create', f'--region={args.region}',
             f'--display-name={args.name}', f'--config={config_path}',
             f'--max-trial-count={args.max_trials}',
             f'--parallel-trial-count={args.parallel_trials}',
             f'--algorithm={_GCLOUD_ALGORITHMS[ALGORITHMS[args.algorithm]]}']
  if args.project:
    command.insert(4, f'--project={args.project}')
  return command
