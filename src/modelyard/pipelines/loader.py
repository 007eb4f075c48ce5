"""Load a pipeline from ``path/to/file.py:name`` or ``package.module:name``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from modelyard.pipelines.errors import PipelineLoadError, PipelineNotFoundError
from modelyard.pipelines.pipeline import PipelineDefinition

USER_MODULE_PREFIX = "_modelyard_user_"


def module_name_for(path: Path) -> str:
    """A stable module name for a pipeline file, the same in every process that works
    in the same folder.

    A file inside the working folder is named by its path from there, so a machine
    that holds the project elsewhere (an image, a Ray worker's copy) names it alike.
    """
    resolved = path.resolve()
    here, identity = _working_folder(), resolved
    if here is not None and resolved.is_relative_to(here):
        identity = resolved.relative_to(here)
    digest = hashlib.sha256(identity.as_posix().encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in resolved.stem)
    return f"{USER_MODULE_PREFIX}{stem}_{digest}"


def _working_folder() -> Path | None:
    try:
        return Path.cwd()
    except FileNotFoundError:  # removed under a long-lived worker
        return None


_imported_versions: dict[str, int] = {}


def import_file(path: Path) -> ModuleType:
    """Import a Python file as a module; again only when the file has changed."""
    name = module_name_for(path)
    if not path.is_file():
        raise PipelineLoadError(f"no such pipeline file: {path}", details={"file": str(path)})
    version = path.stat().st_mtime_ns
    if name in sys.modules and _imported_versions.get(name) == version:
        return sys.modules[name]
    # Like Airflow's DAG folder: modules next to a pipeline file are importable from it.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"{path} is not a Python file", details={"file": str(path)})
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PipelineLoadError(
            f"{path} failed to import: {type(exc).__name__}: {exc}",
            details={"file": str(path), "traceback": traceback.format_exc(limit=-8)},
        ) from exc
    _imported_versions[name] = version
    return module


def load_pipeline(target: str) -> PipelineDefinition:
    """``"pipelines/taxi.py:taxi"`` or ``"mypkg.pipelines:taxi"`` -> the pipeline.

    Raises:
        PipelineLoadError: the file or module does not import.
        PipelineNotFoundError: it has no pipeline of that name.
    """
    location, sep, attribute = target.rpartition(":")
    if not sep or not location or not attribute:
        raise PipelineLoadError(
            f"{target!r} is not FILE.py:PIPELINE or MODULE:PIPELINE", details={"target": target}
        )
    if location.endswith(".py") or "/" in location:
        module = import_file(Path(location))
    else:
        try:
            module = importlib.import_module(location)
        except Exception as exc:
            raise PipelineLoadError(
                f"module {location!r} failed to import: {type(exc).__name__}: {exc}",
                details={"module": location, "traceback": traceback.format_exc(limit=-8)},
            ) from exc
    found = getattr(module, attribute, None)
    if not isinstance(found, PipelineDefinition):
        available = sorted(
            name for name, value in vars(module).items() if isinstance(value, PipelineDefinition)
        )
        raise PipelineNotFoundError(
            f"{location} has no pipeline named {attribute!r} (pipelines there: "
            f"{', '.join(available) or 'none'})",
            details={"target": target, "available": available},
        )
    return found


_resolved: dict[tuple[str, int], Callable[..., Any]] = {}


def resolve_target(target: str, import_path: tuple[str, ...] = ()) -> Callable[..., Any]:
    """Import ``"module:qualname"`` (after importing ``import_path`` files), with a cache.

    Pipeline files are imported again when they change on disk, so a warm worker runs
    the code a retry was started for, not the code it first saw.
    """
    files = [import_file(Path(path)) for path in import_path]
    module_name, _, qualname = target.partition(":")
    module: Any = sys.modules.get(module_name)
    if module is None and module_name.startswith(USER_MODULE_PREFIX) and len(files) == 1:
        # The requester named the file from another working folder: it is the file given.
        module = files[0]
    if module is None:
        module = importlib.import_module(module_name)
    key = (target, id(module))
    cached = _resolved.get(key)
    if cached is not None:
        return cached
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    function = getattr(obj, "fn", obj)  # a TaskDefinition runs its function
    if not callable(function):
        raise TypeError(f"{target} is not callable")
    resolved: Callable[..., Any] = function
    _resolved[key] = resolved
    return resolved
