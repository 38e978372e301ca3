"""``exit_at_once``: a worker whose engine died leaves with its status at once and takes its engine's processes
with it (a stopped engine process would otherwise outlive it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from workers.main import _children


def test_children_lists_every_descendant() -> None:
    tree = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30"])
    try:
        deadline = time.monotonic() + 5
        while len(found := _children(tree.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(found) == 2, found
        assert set(_children(os.getpid())) >= {tree.pid, *found}
    finally:
        tree.kill()
        tree.wait()
        for pid in _children(os.getpid()):
            os.kill(pid, 9)


def test_exit_at_once_exits_with_its_status_and_kills_its_children() -> None:
    script = textwrap.dedent("""
        import signal, subprocess, threading
        from workers.main import exit_at_once
        child = subprocess.Popen(["sleep", "60"])
        child.send_signal(signal.SIGSTOP)  # a hung engine process
        print(child.pid, flush=True)
        threading.Thread(target=threading.Event().wait).start()  # a thread that would block a normal exit
        exit_at_once(3)
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 20
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":  # killed, waiting to be reaped by init
            break
        time.sleep(0.05)
    else:
        assert not os.path.exists(f"/proc/{child}"), "the stopped child outlived the worker"
