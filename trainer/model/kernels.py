"""Which ops of a compiled function would not run on a GPU: the ops that have no GPU kernel
for their dtypes in the installed TensorFlow.

TensorFlow places such an op on the host without a word (soft placement) and copies its
inputs there and back on every step: a uint8 gather did exactly that under --input=device.
The Linux wheel registers its CUDA kernels even on a machine without a GPU, so this check
runs anywhere. It reads the graph, nested functions included (loop and branch bodies,
function calls), and matches each node's dtype attributes against the type constraints of
the kernels registered for its op.
"""

import dataclasses
import functools
from typing import Iterator, List, Tuple

from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import dtypes
from tensorflow.python.framework import kernels as kernel_registry

# Kernels registered for DEFAULT run on any device.
_ANY_DEVICE = 'DEFAULT'
# A function that XLA compiles whole (jit_compile=True): its ops need XLA's support for the
# device, not kernels of their own.
_XLA_MUST_COMPILE = '_XlaMustCompile'


@dataclasses.dataclass(frozen=True)
class Missing:
  """An op with no kernel for the device and its dtypes, and where it is."""
  op: str
  dtypes: Tuple[Tuple[str, Tuple[str, ...]], ...]  # (attribute, dtype names)
  node: str
  function: str  # The (nested) function it is in; '' for the outermost graph.

  def __str__(self):
    types = ', '.join(f'{name}={"/".join(values)}' for name, values in self.dtypes)
    return f'{self.op}({types}) at {self.function or "top"}/{self.node}'


def _graph_def(function) -> graph_pb2.GraphDef:
  """The GraphDef of a ConcreteFunction, a tf.Graph or a GraphDef."""
  if isinstance(function, graph_pb2.GraphDef):
    return function
  graph = getattr(function, 'graph', function)
  return graph.as_graph_def()


def _nodes(graph_def: graph_pb2.GraphDef) -> Iterator[Tuple[str, object]]:
  """(function name, NodeDef) for the graph's nodes and those of every function in its
  library, except functions that XLA compiles whole."""
  for node in graph_def.node:
    yield '', node
  for function in graph_def.library.function:
    attr = function.attr.get(_XLA_MUST_COMPILE)
    if attr is not None and attr.b:
      continue
    for node in function.node_def:
      yield function.signature.name, node


def _type_attrs(node) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
  found = []
  for name, value in sorted(node.attr.items()):
    if name.startswith('_'):
      continue
    if value.HasField('type'):
      found.append((name, (dtypes.as_dtype(value.type).name,)))
    elif value.HasField('list') and value.list.type:
      found.append((name, tuple(dtypes.as_dtype(t).name for t in value.list.type)))
  return tuple(found)


@functools.lru_cache(maxsize=None)
def _kernels(op: str, device_type: str):
  """Each kernel of `op` for the device as {attribute: allowed dtype names}."""
  return tuple(
      {c.name: frozenset(dtypes.as_dtype(t).name for t in c.allowed_values.list.type)
       for c in kernel.constraint}
      for kernel in kernel_registry.get_registered_kernels_for_op(op).kernel
      if kernel.device_type in (device_type, _ANY_DEVICE) and not kernel.label)


def has_kernel(op: str, type_attrs, device_type: str = 'GPU') -> bool:
  """Whether a kernel of `op` for the device allows all of the node's dtypes."""
  types = dict(type_attrs)
  return any(all(set(types.get(name, ())) <= allowed for name, allowed in kernel.items())
             for kernel in _kernels(op, device_type))


def missing_kernels(function, device_type: str = 'GPU') -> List[Missing]:
  """The ops of `function` (a ConcreteFunction, tf.Graph or GraphDef) and of all functions
  nested in it that have no `device_type` kernel for their dtypes, each kind once a function."""
  graph_def = _graph_def(function)
  functions = {f.signature.name for f in graph_def.library.function}
  missing, seen = [], set()
  for where, node in _nodes(graph_def):
    if node.op in functions:  # A call of a nested function: its body is checked.
      continue
    types = _type_attrs(node)
    if (node.op, types, where) in seen:
      continue
    seen.add((node.op, types, where))
    if not has_kernel(node.op, types, device_type):
      missing.append(Missing(node.op, types, node.name, where))
  return missing


# The only ops a compiled loop may leave on the host, none of which touches per-example data.
ALLOWED_ON_HOST = {
    # The loop's clocks (input_wait.py): a read of the host's clock.
    'Timestamp': lambda m: True,
    # The message an Assert prints if it fails (confusion matrix and loss checks): a host
    # string constant that no kernel ever reads on the device.
    'Const': lambda m: m.dtypes == (('dtype', ('string',)),) and '/Assert/' in m.node,
}


def misplaced(function, device_type: str = 'GPU') -> List[Missing]:
  """missing_kernels() without the ops that may stay on the host (ALLOWED_ON_HOST)."""
  return [m for m in missing_kernels(function, device_type)
          if not ALLOWED_ON_HOST.get(m.op, lambda _: False)(m)]
