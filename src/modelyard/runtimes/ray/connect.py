"""Connecting this process to Ray, for the searches and training jobs run on it."""

from __future__ import annotations

import logging
import os

import ray


def connect(address: str | None) -> bool:
    """Make sure this process is connected to Ray; returns whether it started Ray here
    (the caller then shuts it down when done).

    Ray already initialised in this process is used as it is. Otherwise ``address``
    names a cluster (``auto``, ``host:port`` or ``ray://host:10001``), and None starts a
    local Ray with this machine's cores and no dashboard. Workers' output is not copied
    to this process's terminal: trials and training workers log to their own files.
    """
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return True
