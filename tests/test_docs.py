"""The docs name only what exists: links, anchors, files, modules and flags."""

import re

from absl import flags
import pytest

from tests.conftest import REPO
from trainer import flags as trainer_flags

DOCS = sorted({REPO / 'README.md', *REPO.glob('docs/*.md'), *REPO.glob('launch/*.md'),
               *REPO.glob('benchmarks/*.md')})
README_MAX_BYTES = 15 * 1024
_LINK = re.compile(r'\]\(([^)\s]+)\)')
# A path into the repository, as the docs write them: `configs/fast.cfg`, trainer/data/.
_REPO_PATH = re.compile(r'(?<![\w./-])((?:trainer|launch|configs|tests|benchmarks|docs|\.ci)'
                        r'/[\w./-]*)')
_MODULE = re.compile(r'python3? -m ((?:trainer|launch|benchmarks|tests)(?:\.\w+)+)')
_PLACEHOLDER = re.compile(r'[A-Z]{3,}|<|\*|\.\.\.')


def _doc_id(path):
  return str(path.relative_to(REPO))


def _slug(heading):
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
  text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return text.replace(' ', '-')


def _anchors(path):
  return {_slug(line.lstrip('#')) for line in path.read_text().splitlines()
          if line.startswith('#')}


@pytest.mark.parametrize('doc', DOCS, ids=_doc_id)
def test_links_lead_to_files_and_headings_that_exist(doc):
  broken = []
  for target in _LINK.findall(doc.read_text()):
    if re.match(r'^[a-z]+://', target) or target.startswith('mailto:'):
      continue  # The web: not reachable from CI.
    path, _, anchor = target.partition('#')
    file = (doc.parent / path).resolve() if path else doc
    if not file.exists():
      broken.append(f'{target}: no such file')
    elif anchor and anchor not in _anchors(file):
      broken.append(f'{target}: no heading #{anchor} in {file.name}')
  assert not broken, broken


@pytest.mark.parametrize('doc', DOCS, ids=_doc_id)
def test_files_and_modules_named_exist(doc):
  text = doc.read_text()
  missing = []
  for name in _REPO_PATH.findall(text):
    name = name.rstrip('.')
    is_path = name.endswith('/') or re.search(r'\.\w+$', name)  # Not a ratio like a/b.
    if is_path and not _PLACEHOLDER.search(name) and not (REPO / name).exists():
      missing.append(name)
  for module in _MODULE.findall(text):
    path = REPO / module.replace('.', '/')
    if not (path.with_suffix('.py').is_file() or (path / '__init__.py').is_file()):
      missing.append(f'python -m {module}')
  assert not missing, missing


def _table_flags(text):
  """The flags in the first column of a doc's tables: `--a`, `--b` / `--noc`."""
  names = set()
  for line in text.splitlines():
    if line.startswith('| `--'):
      names |= set(re.findall(r'`--(?:no)?(\w+)', line.split(' | ')[0]))
  return names


def test_the_flags_page_documents_every_training_flag_and_no_other():
  values = flags.FlagValues()
  trainer_flags.define_flags(values)
  documented = _table_flags((REPO / 'docs' / 'flags.md').read_text())
  assert documented == set(values), (set(values) ^ documented)


def test_the_evaluation_page_documents_every_flag_of_trainer_evaluate():
  defined = set(re.findall(r"DEFINE_\w+\('(\w+)'", (REPO / 'trainer' / 'evaluate.py').read_text()))
  documented = _table_flags((REPO / 'docs' / 'evaluating.md').read_text())
  assert documented == defined, (defined ^ documented)


def test_the_readme_is_lean_and_leads_with_the_two_commands():
  text = (REPO / 'README.md').read_text()
  assert len(text.encode()) <= README_MAX_BYTES
  first_block = text.split('```')[1]
  assert 'make train' in first_block and 'make test' in first_block
  ci = (REPO / '.ci' / 'run').read_text()
  assert 'make test' in ci  # CI runs the README's test command.


def test_the_predicting_page_documents_every_flag_of_trainer_predict():
  defined = set(re.findall(r"DEFINE_\w+\('(\w+)'", (REPO / 'trainer' / 'predict.py').read_text()))
  documented = _table_flags((REPO / 'docs' / 'predicting.md').read_text())
  assert documented == defined, (defined ^ documented)
