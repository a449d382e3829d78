"""A process's own /etc/hosts: a private mount namespace with another file bound over it.

The processes that use the Cloud Storage stand-in (tests/gcs_stand_in.py) resolve Google's
host names to it, while the rest of the machine, the test session included, keeps the real
file. Needs root (CI runs as root) and a single-threaded caller: a forked child before it
starts anything (tests/forked.py).
"""

import ctypes
import os

_CLONE_NEWNS = 0x00020000
_MS_REC, _MS_PRIVATE, _MS_BIND = 0x4000, 1 << 18, 0x1000
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
  if result != 0:
    number = ctypes.get_errno()
    raise OSError(number, f'{what}: {os.strerror(number)}')


def use_hosts(hosts_file: str) -> None:
  """From now on this process (and what it starts) reads `hosts_file` as /etc/hosts."""
  _check(_libc.unshare(_CLONE_NEWNS), 'unshare(CLONE_NEWNS)')
  # Private first: with shared propagation (systemd's default) the bind below would reach
  # the machine's own namespace.
  _check(_libc.mount(b'none', b'/', None, _MS_REC | _MS_PRIVATE, None), 'mount --make-rprivate /')
  _check(_libc.mount(os.fsencode(hosts_file), b'/etc/hosts', None, _MS_BIND, None),
         'mount --bind /etc/hosts')

