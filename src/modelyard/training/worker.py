"""One worker of a training gang, for function entrypoints.

    python -m modelyard.training.worker ENTRYPOINT PARAMS_JSON REPORT_FILE

Calls ``module:function`` (or ``path/to/file.py:function``) with the parameters as
keyword arguments. The report file receives, as JSON, the function's return value or
the exception it raised (its type, message and traceback), so the launcher can apply the
failure policy to exception types and keep the result; the exit code is 0 or 1.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from modelyard.pipelines.loader import import_file, module_name_for, resolve_target


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
        result = function(**json.loads(params_json))
    except BaseException as exc:  # the user's code may raise anything, even SystemExit
        report.write_text(
            json.dumps(
                {
                    "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                    "message": str(exc),
                    "traceback": traceback.format_exc(),
                }
            )
        )
        traceback.print_exc()
        return 1
    try:
        report.write_text(json.dumps({"result": result}))
    except TypeError:
        report.write_text(json.dumps({"result": repr(result)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
