"""The code part of a task's cache key: its source and the user code it calls.

"User code" is code from files outside the standard library, installed packages and
modelyard itself: editing a helper the task calls changes the fingerprint, upgrading a
library does not (the task's ``env`` covers that). Sources are compared as syntax trees,
so comments and formatting do not count; docstrings and code do.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import sysconfig
import textwrap
import types
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

_MODELYARD_DIR = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def _library_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple(Path(paths[key]).resolve() for key in keys if key in paths)


def _is_user_code(obj: Any) -> bool:
    try:
        source_file = inspect.getsourcefile(obj)
    except TypeError:
        return False
    if source_file is None:
        return False
    path = Path(source_file).resolve()
    if path.is_relative_to(_MODELYARD_DIR):
        return False
    return not any(path.is_relative_to(root) for root in _library_dirs())


def _normalised_source(obj: Any) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return f"<no source: {getattr(obj, '__qualname__', repr(obj))}>"
    try:
        return ast.dump(ast.parse(source))
    except SyntaxError:
        return source


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _referenced(fn: types.FunctionType) -> Iterator[Any]:
    """Globals (and attributes of global user modules) that ``fn``'s code names."""
    names = {name for code in _code_objects(fn.__code__) for name in code.co_names}
    for name in sorted(names):
        value = fn.__globals__.get(name)
        if isinstance(value, types.ModuleType):
            if _is_user_code(value):
                for attribute in sorted(names):
                    member = getattr(value, attribute, None)
                    if member is not None and not isinstance(member, types.ModuleType):
                        yield member
        elif value is not None:
            yield value


def _unwrap(value: Any) -> Any:
    inner = getattr(value, "fn", None)  # a TaskDefinition
    return inner if isinstance(inner, types.FunctionType) else value


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A SHA-256 over ``fn``'s source and, transitively, the user code it references."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    stack: list[Any] = [_unwrap(fn)]
    while stack:
        obj = _unwrap(stack.pop())
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if not isinstance(obj, types.FunctionType | type) or not _is_user_code(obj):
            continue
        digest.update(f"{obj.__qualname__}\0".encode())
        digest.update(_normalised_source(obj).encode())
        functions = (
            [obj]
            if isinstance(obj, types.FunctionType)
            else [v for v in vars(obj).values() if isinstance(v, types.FunctionType)]
        )
        for function in functions:
            stack.extend(_referenced(function))
    return digest.hexdigest()
