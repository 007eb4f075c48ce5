"""Golden files: rendered text compared exactly with a reviewed copy in ``golden/``.

Set ``MODELYARD_UPDATE_GOLDEN=1`` to rewrite the copies from the current output, then
review the diff before committing it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
UPDATE = "MODELYARD_UPDATE_GOLDEN"
# Read at import: the suite's autouse fixture hides MODELYARD_* variables from tests.
UPDATING = os.environ.get(UPDATE) == "1"


def assert_golden(name: str, text: str) -> None:
    """Fail with a unified diff unless ``text`` equals ``golden/<name>`` exactly."""
    path = GOLDEN / name
    if UPDATING:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.is_file():
        pytest.fail(f"no golden file {path}: run with {UPDATE}=1 to write it, then review it")
    expected = path.read_text()
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"golden/{name}",
                tofile="rendered",
            )
        )
        pytest.fail(
            f"rendered text differs from golden/{name} ({UPDATE}=1 rewrites it):\n{diff}",
            pytrace=False,
        )
