"""Functions the worker-pool tests run in worker processes (importable by name)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def noop() -> None:
    return None


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def exit_hard(code: int) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def ignore_sigterm_and_sleep(seconds: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


def talk() -> str:
    print("to stdout")
    print("to stderr", file=sys.stderr)
    subprocess.run(["echo", "from a child process"], check=True)
    return "said"


def read_env(name: str) -> str | None:
    return os.environ.get(name)


def unpicklable() -> object:
    return lambda: None


def system_exit() -> None:
    sys.exit(3)
