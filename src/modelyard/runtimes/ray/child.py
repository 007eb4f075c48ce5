"""A training worker's process under a Ray Train worker, ended with it.

    python -m modelyard.runtimes.ray.child PARENT_PID -m MODULE ARGS...
    python -m modelyard.runtimes.ray.child PARENT_PID SCRIPT.py ARGS...

Runs the program as ``python -m MODULE ARGS`` or ``python SCRIPT.py ARGS`` would, in
this process, and kills this process's group when ``PARENT_PID`` is gone: Ray stops a
gang by killing its workers' processes, which cannot stop their children themselves,
and a child left behind would wait in a collective for peers that are gone.

Imports nothing heavy (no Ray): it starts as fast as the program it runs.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

_WATCH_S = 0.5


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCH_S)
    os.killpg(os.getpgid(0), signal.SIGKILL)


def main(argv: list[str]) -> None:
    parent, command = int(argv[0]), argv[1:]
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()
    if command[0] == "-m":
        sys.argv = command[1:]
        runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        return
    script = os.path.abspath(command[0])
    sys.argv = [script, *command[1:]]
    sys.path[0] = os.path.dirname(script)  # as `python script.py` sets it
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
