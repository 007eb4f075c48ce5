"""``modelyard artifacts``: list, get, lineage and gc over what runs stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.artifacts import from_settings
from modelyard.cli.main import main
from modelyard.config import Settings
from modelyard.errors import ExitCode
from tests.cli.test_runs_cli import FLOW

pytestmark = pytest.mark.integration


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_list_get_lineage_and_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = tmp_path / "flow.py"
    flow.write_text(FLOW)
    assert main(["run", f"{flow}:flow", "-P", "n=4", "--workers", "1", "-o", "json"]) == 0
    run_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]

    assert main(["artifacts", "list", "--run", run_id, "-o", "json"]) == 0
    produced = _json(capsys)
    assert isinstance(produced, list)
    assert sorted(ref["kind"] for ref in produced) == ["json", "json"]

    store = from_settings(Settings())
    by_value = {json.dumps(store.get_json(ref["digest"])): ref["digest"] for ref in produced}
    items, total = by_value["[0, 1, 2, 3]"], by_value["6"]
    assert main(["artifacts", "get", total]) == 0
    assert capsys.readouterr().out.strip() == "6"

    assert main(["artifacts", "lineage", items, "-o", "json"]) == 0
    edges = _json(capsys)
    assert isinstance(edges, list)
    assert [(e["direction"], e["task"]) for e in edges] == [
        ("produced", "items"),
        ("consumed", "total"),
    ]
    assert main(["artifacts", "lineage", "sha256:" + "0" * 64]) == ExitCode.NOT_FOUND
    capsys.readouterr()

    orphan = store.put_json({"left": "behind"})
    assert main(["artifacts", "gc", "--min-age-hours", "0", "-o", "json"]) == 0
    dry = _json(capsys)
    assert isinstance(dry, dict)
    assert dry["deleted"] == [orphan.digest]
    assert store.exists(orphan)
    assert main(["artifacts", "gc", "--delete", "--min-age-hours", "0", "-o", "json"]) == 0
    assert not store.exists(orphan)
    assert store.exists(items)
    assert store.exists(total)
