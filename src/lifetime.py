"""A child process that ends with its parent.

A parent killed with SIGKILL cannot stop its children, and Linux does not end them
either: a server's workers would go on serving its port, a worker supervisor's children
go on taking jobs, with nobody left to stop them. So a child asks the kernel to send it
``signum`` when its parent dies (``PR_SET_PDEATHSIG``), and checks that the parent did not
die before it asked.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import partial

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Be sent ``signum`` when the parent dies; exit now if it already has."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent_pid:  # it died before prctl: nobody will signal us
        os._exit(0)


def ends_with_this_process(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess``: the child started ends when this process dies."""
    return partial(end_with_parent, os.getpid(), signum)


def exit_after_parent(parent_pid: int, grace: float, every: float = 1.0) -> None:
    """Exit at most ``grace`` s after the parent has died, whatever became of its signal.

    For a process whose SIGTERM handling may not finish: a granian worker whose handler
    ran while the worker's Rust side held what it needs stayed deadlocked in it, orphaned
    and holding the port, after its master was killed. A daemon thread notices the
    parent is gone (it is then a child of another process) and ends the process.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="exit-after-parent", daemon=True).start()
