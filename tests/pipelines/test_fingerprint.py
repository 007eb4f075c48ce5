"""The code fingerprint changes with the task's code and the user code it calls, only."""

from __future__ import annotations

import textwrap
from pathlib import Path

from modelyard.pipelines.fingerprint import code_fingerprint
from modelyard.pipelines.loader import import_file

BASE = """
import json
import helpers_{tag} as helpers

RATE = 2

def scale(x):
    return x * RATE

def unrelated():
    return "not called"

class Cleaner:
    def run(self, x):
        return scale(x)

def task_body(x):
    # a comment
    return Cleaner().run(x) + helpers.offset(x) + len(json.dumps(x))
"""
HELPERS = """
def offset(x):
    return 1

def not_called():
    return 0
"""


def _fingerprint(tmp_path: Path, tag: str, base: str = BASE, helpers: str = HELPERS) -> str:
    folder = tmp_path / tag
    folder.mkdir()
    (folder / f"helpers_{tag}.py").write_text(textwrap.dedent(helpers))
    (folder / "pipe.py").write_text(textwrap.dedent(base.replace("{tag}", tag)))
    import sys

    sys.path.insert(0, str(folder))
    try:
        module = import_file(folder / "pipe.py")
    finally:
        sys.path.remove(str(folder))
    # Module names differ per folder; fingerprint the same qualified shape.
    return code_fingerprint(module.task_body)


def test_what_changes_the_fingerprint(tmp_path: Path) -> None:
    base = _fingerprint(tmp_path, "a")
    # Formatting and comments do not count.
    assert _fingerprint(tmp_path, "b", BASE.replace("# a comment", "# another")) != ""
    same = _fingerprint(tmp_path, "c", BASE.replace("    # a comment\n", ""))
    changed_body = _fingerprint(tmp_path, "d", BASE.replace("+ len(", "- len("))
    changed_callee = _fingerprint(tmp_path, "e", BASE.replace("return x * RATE", "return x"))
    changed_method = _fingerprint(tmp_path, "f", BASE.replace("return scale(x)", "return x"))
    changed_helper = _fingerprint(tmp_path, "g", helpers=HELPERS.replace("return 1", "return 2"))
    changed_unrelated = _fingerprint(tmp_path, "h", BASE.replace('"not called"', '"still not"'))
    changed_uncalled_helper = _fingerprint(
        tmp_path, "i", helpers=HELPERS.replace("return 0", "return 9")
    )
    assert len({base, changed_body, changed_callee, changed_method, changed_helper}) == 5
    assert changed_unrelated == base
    assert changed_uncalled_helper == base
    assert same == base


def test_library_code_is_not_part_of_it() -> None:
    assert code_fingerprint(textwrap.dedent) == code_fingerprint(Path.exists)
