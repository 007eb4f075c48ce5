"""The checkpoint helper: atomic saves, the newest K kept, rank 0 writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.training import checkpoint


def test_saves_are_loaded_newest_first_and_only_k_are_kept(tmp_path: Path) -> None:
    assert checkpoint.load(tmp_path) is None
    for step in range(5):
        checkpoint.save(
            {"step": step, "weights": [step] * 3}, step=step, directory=tmp_path, keep=2
        )
    assert [step for step, _ in checkpoint.saved(tmp_path)] == [3, 4]
    latest = checkpoint.load(tmp_path)
    assert latest is not None
    assert (latest.step, latest.state) == (4, {"step": 4, "weights": [4, 4, 4]})
    assert not list(tmp_path.glob(".partial-*"))


def test_a_failed_save_leaves_no_checkpoint_behind(tmp_path: Path) -> None:
    class Unpicklable:
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("cannot be saved")

    checkpoint.save({"ok": True}, step=0, directory=tmp_path)
    with pytest.raises(RuntimeError, match="cannot be saved"):
        checkpoint.save({"bad": Unpicklable()}, step=1, directory=tmp_path)
    assert [step for step, _ in checkpoint.saved(tmp_path)] == [0]
    assert list(tmp_path.iterdir()) == [tmp_path / "checkpoint-0000000000.pt"]


def test_only_rank_0_writes_and_the_folder_comes_from_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    assert checkpoint.save({"x": 1}, step=0) is None
    assert checkpoint.saved() == []
    monkeypatch.setenv("RANK", "0")
    assert checkpoint.save({"x": 1}, step=0) == tmp_path / "checkpoint-0000000000.pt"
    monkeypatch.delenv("MODELYARD_CHECKPOINT_DIR")
    with pytest.raises(ValueError, match="no checkpoint folder"):
        checkpoint.load()
