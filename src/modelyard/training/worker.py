"""One worker of a training gang, for function entrypoints.

    python -m modelyard.training.worker ENTRYPOINT PARAMS_JSON REPORT_FILE

Calls ``module:function`` (or ``path/to/file.py:function``) with the parameters as
keyword arguments. The report file receives, as JSON, the function's return value or
the exception it raised (its type, message and traceback), so the launcher can apply the
failure policy to exception types and keep the result; the exit code is 0 or 1.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import traceback
import typing
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from modelyard.errors import InvalidInputError
from modelyard.pipelines.loader import import_file, module_name_for, resolve_target

logger = logging.getLogger(__name__)

_MESSAGE_CHARS = 500
_REPORT_BYTES = 4096


def resolve_entrypoint(entrypoint: str) -> Any:
    """The function an entrypoint names; a file path is imported as a module first."""
    module, _, function = entrypoint.rpartition(":")
    if module.endswith(".py"):
        path = Path(module).resolve()
        import_file(path)
        return resolve_target(f"{module_name_for(path)}:{function}")
    return resolve_target(entrypoint)


def main(argv: list[str]) -> int:
    entrypoint, params_json, report_file = argv
    report = Path(report_file)
    try:
        function = resolve_entrypoint(entrypoint)
        _tag_code(entrypoint, function)
        result = function(**checked_params(function, entrypoint, json.loads(params_json)))
    except BaseException as exc:  # the user's code may raise anything, even SystemExit
        report.write_text(_error_report(exc))
        traceback.print_exc()
        return 1
    _flush_tracking()
    try:
        report.write_text(json.dumps({"result": result}, default=_plain))
    except (TypeError, ValueError):
        report.write_text(json.dumps({"result": repr(result)}))
    return 0


def _error_report(exc: BaseException) -> str:
    """The exception as JSON of at most ``_REPORT_BYTES``: on Kubernetes the report is
    the pod's termination message, which the kubelet cuts there; the traceback's tail is
    kept (the whole of it is in the worker's log)."""
    fields = {
        "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:_MESSAGE_CHARS],
        "traceback": traceback.format_exc(),
    }
    text = json.dumps(fields)
    while len(text.encode()) > _REPORT_BYTES and fields["traceback"]:
        fields["traceback"] = fields["traceback"][len(fields["traceback"]) // 2 + 1 :]
        text = json.dumps(fields)
    return text


def checked_params(function: Any, entrypoint: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters, checked against the function's signature and converted to its
    annotated types (``"5"`` for an ``int`` becomes 5) before any training starts.

    Raises:
        InvalidInputError: an unknown or missing parameter, or a value its annotation
            refuses; the message names each one.
    """
    signature = inspect.signature(function)
    try:
        signature.bind(**params)
    except TypeError as exc:
        raise InvalidInputError(
            f"parameters do not fit {entrypoint}{signature}: {exc}", code="job/invalid_params"
        ) from exc
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations that do not resolve: nothing to check against
        hints = {}
    checked = dict(params)
    problems = []
    for name, value in params.items():
        if name not in hints:
            continue
        adapter = _adapter(hints[name])
        if adapter is None:  # a type pydantic cannot check (e.g. a tensor): left as given
            continue
        try:
            checked[name] = _validate(adapter, value)
        except ValidationError as exc:
            reason = exc.errors(include_url=False)[0]["msg"]
            problems.append(f"{name}: {reason}, got {value!r}")
    if problems:
        raise InvalidInputError(
            f"parameters do not fit {entrypoint}{signature}: " + "; ".join(problems),
            code="job/invalid_params",
        )
    return checked


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (a metric as ``np.float32``) as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _flush_tracking() -> None:
    """Metric points the function buffered are written before the worker reports."""
    if "modelyard.training.tracking" in sys.modules:
        from modelyard.training import tracking

        tracking.flush()


def _validate(adapter: TypeAdapter[Any], value: Any) -> Any:
    """The value as its annotation wants it. A number or boolean given where text is
    wanted is taken as its text (``-P run=2024`` for ``run: str``)."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        if isinstance(value, bool | int | float):
            try:
                return adapter.validate_python(json.dumps(value))
            except ValidationError:
                pass
        raise


def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    try:
        return TypeAdapter(annotation)
    except Exception:
        return None


def _tag_code(entrypoint: str, function: Any) -> None:
    """Rank 0 names the code it runs on the job's MLflow run (when it has one)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or os.environ.get("RANK", "0") != "0":
        return
    try:
        from mlflow import MlflowClient

        from modelyard.training.tracking import code_tags

        client = MlflowClient()
        for key, value in code_tags(entrypoint, function).items():
            client.set_tag(run_id, key, value)
    except Exception:  # tracking is a record of the job, never a reason for it to fail
        logger.warning("could not tag MLflow run %s with the code version", run_id, exc_info=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
