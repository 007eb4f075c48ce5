"""Local processes of deployments: model server replicas and routers.

Each runs in a session of its own, so it outlives the control plane that started it (as
pods outlive a controller) and a restarted control plane adopts it by its recorded pid,
after checking that the pid still runs the command it started (pids are reused).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

READY_PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class Launched:
    pid: int
    log_path: Path


# The processes this one started, kept until they are reaped: they are meant to outlive
# their handle, and a collected handle of a running child is a warning.
_children: dict[int, subprocess.Popen[bytes]] = {}
_exit_codes: dict[int, int] = {}  # of children reaped, until exit_code() reads them


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the process that takes it may still lose a race;
    a replica that cannot bind fails to start and is replaced)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def modelyard_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelyard.cli.main", *args]


def launch(
    args: list[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    memory_limit: int | None = None,
) -> Launched:
    """Start ``modelyard <args>`` in its own session, output appended to ``log_path``;
    ``memory_limit`` caps its address space (``RLIMIT_AS``), as the worker pool does."""
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def limit() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603  (our own command)
            modelyard_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=limit if memory_limit is not None else None,
        )
    _children[process.pid] = process
    return Launched(process.pid, log_path)


def running(pid: int | None, port: int) -> bool:
    """Whether ``pid`` is alive and is the process started for ``port``."""
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        if not Path("/proc/self").exists():  # no procfs: fall back to a signal probe
            try:
                os.kill(pid, 0)
            except OSError:
                return False
            return True
        return False
    if state in ("Z", "X"):  # ended: reap it, keeping its exit code
        _reap(pid)
        return False
    return str(port).encode() in cmdline and b"modelyard.cli.main" in cmdline


def _reap(pid: int) -> None:
    """Collect an ended child's exit code (waiting, since a concurrent poll from another
    thread would make a non-blocking one miss it)."""
    child = _children.pop(pid, None)
    if child is None:
        return
    try:
        _exit_codes[pid] = child.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        _children[pid] = child


def ready(url: str, path: str = "/v2/health/ready") -> bool:
    try:
        return httpx.get(url + path, timeout=READY_PROBE_TIMEOUT).status_code == 200
    except httpx.HTTPError:
        return False


def stop(pid: int | None, port: int, grace_seconds: float = 20.0) -> None:
    """SIGTERM (the server drains its in-flight requests), SIGKILL after the grace."""
    if pid is None:
        return
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        if not running(pid, port):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while running(pid, port) and time.monotonic() < deadline:
            time.sleep(0.05)
    _exit_codes.pop(pid, None)  # stopped on purpose: nobody asks how it ended


def exit_code(pid: int) -> int | None:
    """The exit status of a child that :func:`running` found ended (``None`` if it is
    unknown or not our child: an adopted process)."""
    return _exit_codes.pop(pid, None)


def log_tail(path: str | Path, lines: int = 5) -> str:
    """The last lines a process printed (why a replica failed)."""
    try:
        with Path(path).open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - 8192))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
