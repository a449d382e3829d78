"""The layout the docs describe is the layout of the code: packages, their imports, sizes."""

import ast
import re

import pytest

from tests.conftest import REPO

TRAINER = REPO / 'trainer'
MAX_LINES = 350
# What the package docstrings say: a module a line under "Modules:", then "May import: ...".
_MODULE_LINE = re.compile(r'^  (\S+\.py)\s{2,}\S')
_PACKAGE_LINE = re.compile(r'^  (\w+)/\s{2,}\S')


def _packages():
  return sorted(p.name for p in TRAINER.iterdir() if (p / '__init__.py').is_file())


def _docstring(path):
  return ast.get_docstring(ast.parse(path.read_text())) or ''


def _listed(docstring, pattern):
  return {m.group(1) for m in map(pattern.match, docstring.splitlines()) if m}


def _may_import(package):
  text = _docstring(TRAINER / package / '__init__.py')
  line = next((l for l in text.splitlines() if l.startswith('May import:')), None)
  assert line, f'trainer/{package}/__init__.py does not say what it may import'
  return set(re.findall(r'trainer\.(\w+)', line))


def _module_name(path):
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _trainer_imports(path):
  """The trainer modules `path` imports, at module level or inside functions."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.split('.')[0] == 'trainer'}
    elif isinstance(node, ast.ImportFrom) and node.module and \
        node.module.split('.')[0] == 'trainer':
      for alias in node.names:  # `from trainer.data import order` imports a module.
        candidate = f'{node.module}.{alias.name}'
        is_module = (REPO / (candidate.replace('.', '/') + '.py')).is_file() or \
            (REPO / candidate.replace('.', '/') / '__init__.py').is_file()
        found.add(candidate if is_module else node.module)
  return found


def _trainer_modules():
  return {_module_name(p): p for p in TRAINER.rglob('*.py')}


def test_each_package_lists_exactly_its_modules():
  for package in _packages():
    listed = _listed(_docstring(TRAINER / package / '__init__.py'), _MODULE_LINE)
    present = {p.name for p in (TRAINER / package).glob('*.py') if p.name != '__init__.py'}
    assert listed == present, f'trainer/{package}/__init__.py lists {sorted(listed)}'


def test_the_top_docstring_lists_the_entry_points_and_packages():
  text = _docstring(TRAINER / '__init__.py')
  entry_points = {p.name for p in TRAINER.glob('*.py') if p.name != '__init__.py'}
  assert _listed(text, _MODULE_LINE) == entry_points
  assert _listed(text, _PACKAGE_LINE) == set(_packages())


def test_packages_import_only_what_their_docstrings_allow():
  packages = set(_packages())
  wrong = []
  for name, path in _trainer_modules().items():
    parts = name.split('.')
    if len(parts) < 3:  # trainer/*.py: the entry points may use everything.
      continue
    allowed = _may_import(parts[1]) | {parts[1]}
    for imported in _trainer_imports(path):
      target = imported.split('.')
      if len(target) < 2 or target[1] not in packages:
        wrong.append(f'{name} imports {imported}, an entry point')
      elif target[1] not in allowed:
        wrong.append(f'{name} imports {imported}; trainer/{parts[1]}/ may import '
                     f'{sorted(allowed - {parts[1]}) or "nothing of the trainer"}')
  assert not wrong, '\n'.join(wrong)


def test_the_allowed_imports_run_one_way():
  allowed = {package: _may_import(package) for package in _packages()}

  def reaches(start, goal, seen=()):
    return any(p == goal or (p not in seen and reaches(p, goal, seen + (p,)))
               for p in allowed[start])

  assert not [p for p in allowed if reaches(p, p)], allowed


def test_no_import_cycle():
  modules = _trainer_modules()
  graph = {name: {i for i in _trainer_imports(path) if i in modules and i != name}
           for name, path in modules.items()}
  state, cycles = {}, []

  def visit(name, trail):
    state[name] = 'open'
    for nxt in sorted(graph[name]):
      if state.get(nxt) == 'open':
        cycles.append(trail[trail.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, trail + [nxt])
    state[name] = 'done'

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])
  assert not cycles, ' -> '.join(cycles[0])


@pytest.mark.parametrize('folder', ['trainer', 'launch', 'benchmarks', 'tests'])
def test_no_module_is_over_350_lines(folder):
  long = {str(p.relative_to(REPO)): n for p in (REPO / folder).rglob('*.py')
          if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, f'split these by job: {long}'


def test_the_readme_layout_names_every_package_and_entry_point():
  readme = (REPO / 'README.md').read_text()
  layout = readme.split('\n## Layout', 1)[1].split('\n## ', 1)[0]
  # The table's first column: `trainer/data/` or `trainer/main.py`, a row each.
  named = set(re.findall(r'^\| `(trainer/[\w./]+)`', layout, flags=re.M))
  expected = {f'trainer/{p}/' for p in _packages()} | {
      f'trainer/{p.name}' for p in TRAINER.glob('*.py') if p.name != '__init__.py'}
  assert named == expected
