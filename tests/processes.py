"""Killing a child process midway, as a CI timeout or an out-of-memory kill would."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def kill_once_written(command: list[str], path: Path, seconds: float = 300, **popen) -> None:
    """Run `command` and SIGKILL it as soon as `path` exists (or when it ends first, or after `seconds`)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
