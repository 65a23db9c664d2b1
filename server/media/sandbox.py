"""What a decode worker locks itself into before it reads its first untrusted byte (runs inside the worker only).

- **Memory**: ``RLIMIT_DATA`` (heap and private mappings; the shared input/output buffers are not counted) at the
  configured limit, so an allocation beyond it fails in the worker, never in the server; no core dumps.
- **System calls** (seccomp-BPF through libseccomp's ctypes binding, ``pyseccomp``): creating or connecting sockets,
  opening, creating, renaming or deleting files, running programs, and tracing other processes fail with ``EACCES``.
  Everything the decoders need (Pillow plugins, PyAV's modules, FFmpeg's codecs) is imported before the filter goes
  on, so nothing has to be opened afterwards. The pipes and buffers the server handed over stay usable.
- ``PR_SET_PDEATHSIG``: the worker dies with the server.

:func:`self_check` proves the filter is on (a socket and an open both refused) and the worker reports it at start;
the pool refuses a worker that is not sandboxed unless the operator turned the sandbox off.
"""

from __future__ import annotations

import ctypes
import errno
import resource
import signal
import socket

DENIED = (
    # network
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "sendto",
    "sendmsg",
    "sendmmsg",
    # files: opening, creating, changing
    "open",
    "openat",
    "openat2",
    "creat",
    "open_by_handle_at",
    "name_to_handle_at",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
    "truncate",
    "chmod",
    "fchmodat",
    "chown",
    "fchownat",
    "lchown",
    "mknod",
    "mknodat",
    "mount",
    "umount2",
    "chroot",
    "pivot_root",
    # other programs and processes
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kexec_load",
    "bpf",
    "userfaultfd",
    "perf_event_open",
)
PR_SET_PDEATHSIG = 1


def limit_memory(data_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (data_bytes, data_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def install_filter() -> None:
    """Load the seccomp filter (raises OSError/ImportError when the kernel or libseccomp cannot)."""
    import pyseccomp

    rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(pyseccomp.ERRNO(errno.EACCES), name)
        except (RuntimeError, ValueError, OSError):
            continue  # a system call this architecture does not have
    rules.load()


def self_check() -> dict[str, bool]:
    """Whether the sandbox holds: a socket cannot be made and a file cannot be opened."""
    result = {"socket_refused": False, "open_refused": False}
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except OSError:
        result["socket_refused"] = True
    try:
        with open("/proc/self/status", "rb"):
            pass
    except OSError:
        result["open_refused"] = True
    return result
