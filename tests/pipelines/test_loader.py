"""Loading pipelines from files and modules, and the errors when that fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.pipelines.errors import PipelineLoadError, PipelineNotFoundError
from modelyard.pipelines.loader import load_pipeline, module_name_for, resolve_target

GOOD = """
from modelyard.pipelines.pipeline import pipeline
from modelyard.pipelines.task import task

@task
def hello(name: str) -> str:
    return "hello " + name

@pipeline
def greet(name: str = "world") -> None:
    hello(name)
"""


def test_a_file_pipeline_loads_and_its_tasks_point_back_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "greet.py"
    path.write_text(GOOD)
    definition = load_pipeline(f"{path}:greet")
    spec = definition.spec(f"{path}:greet")
    assert spec.nodes[0].task == f"{module_name_for(path)}:hello"
    assert load_pipeline(f"{path}:greet") is definition  # imported once per process


def test_a_module_pipeline_loads() -> None:
    assert load_pipeline("tests.pipelines.sample:daily").name == "daily"


@pytest.mark.parametrize(
    ("content", "error", "fragment"),
    [
        ("import no_such_module_anywhere\n", PipelineLoadError, "ModuleNotFoundError"),
        ("def broken(:\n", PipelineLoadError, "SyntaxError"),
        ("raise RuntimeError('boom at import')\n", PipelineLoadError, "boom at import"),
        (GOOD, PipelineNotFoundError, "pipelines there: greet"),
    ],
)
def test_files_that_do_not_give_the_pipeline_are_clear_errors(
    tmp_path: Path, content: str, error: type[Exception], fragment: str
) -> None:
    path = tmp_path / "pipe.py"
    path.write_text(content)
    with pytest.raises(error) as raised:
        load_pipeline(f"{path}:other")
    assert fragment in str(raised.value)


def test_bad_targets() -> None:
    with pytest.raises(PipelineLoadError, match=r"FILE\.py:PIPELINE"):
        load_pipeline("no-colon")
    with pytest.raises(PipelineLoadError, match="no such pipeline file"):
        load_pipeline("missing/file.py:p")
    with pytest.raises(PipelineLoadError, match="failed to import"):
        load_pipeline("no_such_pkg.mod:p")


def checkout(root: Path, greeting: str) -> Path:
    """A project folder holding ``flows/greet.py`` whose task says ``greeting``."""
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "greet.py").write_text(GOOD.replace('"hello "', repr(greeting + " ")))
    return root


def test_a_file_in_the_working_folder_has_the_same_name_in_every_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = []
    for root in (checkout(tmp_path / "a", "hi"), checkout(tmp_path / "b", "hi")):
        monkeypatch.chdir(root)
        names.append(module_name_for(Path("flows/greet.py")))
        assert module_name_for(root / "flows" / "greet.py") == names[-1]
    assert names[0] == names[1]
    monkeypatch.chdir(tmp_path)  # the same files, seen from outside either checkout
    assert module_name_for(tmp_path / "a" / "flows" / "greet.py") != names[0]


def test_a_task_named_from_another_working_folder_runs_the_file_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requester = checkout(tmp_path / "laptop", "from the laptop")
    worker = checkout(tmp_path / "image", "from the image")
    monkeypatch.chdir(tmp_path)  # the requester named its file from outside its checkout
    target = f"{module_name_for(requester / 'flows' / 'greet.py')}:hello"
    monkeypatch.chdir(worker)
    assert target.partition(":")[0] != module_name_for(Path("flows/greet.py"))
    assert resolve_target(target, ("flows/greet.py",))("you") == "from the image you"
