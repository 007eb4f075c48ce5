"""Reading what a CLI command printed, in tests."""

from __future__ import annotations

import json

import pytest


def last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    """The JSON object on the last line a command printed (``-o json``)."""
    value = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value
