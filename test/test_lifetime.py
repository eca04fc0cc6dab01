"""stocks.lifetime: a child that ends with its parent, even when its SIGTERM goes nowhere."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from conftest import running, wait_for

# A parent that starts a child and prints its pid; the child ignores SIGTERM (as a
# process stuck in its signal handler would) and relies on exit_after_parent alone.
PARENT = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", CHILD])
print(child.pid, flush=True)
time.sleep(60)
"""
CHILD = """
import os, signal, time
from stocks.lifetime import end_with_parent, exit_after_parent
signal.signal(signal.SIGTERM, signal.SIG_IGN)
end_with_parent(os.getppid())
exit_after_parent(os.getppid(), grace=0.5, every=0.1)
print("ready", flush=True)
time.sleep(60)
"""


def test_a_child_that_ignores_sigterm_still_exits_after_its_parent_dies():
    code = f"CHILD = {CHILD!r}\n{PARENT}"
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline() == "ready\n"  # the child shares the parent's stdout
        assert running(child)
        parent.kill()  # SIGKILL: the child's SIGTERM from the kernel is ignored
        parent.wait()
        wait_for(lambda: not running(child), 15, "the orphaned child to exit")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # the child too, should the test fail
        parent.wait()
