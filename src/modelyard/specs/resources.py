"""Compute resources of one task, job worker or model replica, in Kubernetes' units."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

from modelyard.specs.common import Spec

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i|[kMGT])?\s*$")
_CPU = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m)?\s*$")


def parse_memory(value: object) -> int:
    """``"512Mi"`` -> 536870912; plain numbers are bytes."""
    if isinstance(value, bool):
        raise ValueError("memory must be a size like '512Mi' or a number of bytes")
    if isinstance(value, int | float):
        return int(value)
    match = _QUANTITY.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a memory size (use e.g. '512Mi', '2Gi', '1G')")
    number, unit = match.groups()
    factor = _BINARY.get(unit or "") or _DECIMAL.get(unit or "") or 1
    return int(float(number) * factor)


def parse_cpu(value: object) -> float:
    """``"500m"`` -> 0.5; plain numbers are cores."""
    if isinstance(value, bool):
        raise ValueError("cpu must be a number of cores or millicores like '500m'")
    if isinstance(value, int | float):
        return float(value)
    match = _CPU.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a CPU quantity (use e.g. 2, 0.5 or '500m')")
    number, milli = match.groups()
    return float(number) / 1000 if milli else float(number)


MemoryBytes = Annotated[int, BeforeValidator(parse_memory), Field(gt=0)]
Cores = Annotated[float, BeforeValidator(parse_cpu), Field(gt=0)]


class Resources(Spec):
    """What one process needs. ``None`` means: the runtime's default.

    Args:
        cpu: Cores (``2``, ``0.5``) or millicores (``"500m"``).
        memory: Bytes or a quantity (``"512Mi"``, ``"2Gi"``); enforced as a hard limit
            where the runtime can (the local runtime sets RLIMIT_AS per worker).
        gpu: Whole GPUs (``nvidia.com/gpu`` on Kubernetes).
    """

    cpu: Cores | None = None
    memory: MemoryBytes | None = None
    gpu: int = Field(default=0, ge=0)
