"""Connecting this process to Ray, for the searches and training jobs run on it."""

from __future__ import annotations

import logging
import os

import ray


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray; returns whether it started Ray here
    (the caller then shuts it down when done).

    Ray already initialised in this process is used as it is. Otherwise ``address``
    names a cluster (``auto``, ``host:port`` or ``ray://host:10001``); None means the
    cluster ``RAY_ADDRESS`` names (as inside a KubeRay job), else a local Ray with
    ``num_cpus`` (default: this machine's cores) and no dashboard. Workers' output is
    not copied to this process's terminal: tasks, trials and training workers log to
    their own files.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    return True
