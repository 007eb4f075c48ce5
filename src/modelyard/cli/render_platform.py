"""``modelyard render platform``: the platform's own Kubernetes objects (what the Helm
chart in ``deploy/helm/modelyard`` installs) from the same values file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from modelyard.cli.common import invalid_spec
from modelyard.errors import InvalidInputError
from modelyard.runtimes.kubernetes.objects import to_yaml
from modelyard.runtimes.kubernetes.platform import PlatformValues, load_values, render_platform

CODE = "render/invalid"


def platform(
    values: Annotated[
        Path | None,
        typer.Option(
            "--values",
            "-f",
            help="The platform's values file (the Helm chart's values; defaults without one).",
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            help="Put everything in this namespace: the platform and every project "
            "(for a cluster where modelyard may not create namespaces)."
        ),
    ] = None,
) -> None:
    """The platform: API, controllers, migrations, RBAC, ingress, monitoring, network
    policies, priority classes and the project namespaces with their quotas."""
    data = read_values(values) if values is not None else {}
    if namespace is not None:
        workloads = data.get("workloads")
        data = {
            **data,
            "namespace": namespace,
            "workloads": {
                **(workloads if isinstance(workloads, dict) else {}),
                "single_namespace": namespace,
            },
        }
    typer.echo(to_yaml(render_platform(parse_values(data))), nl=False)


def read_values(path: Path) -> dict[str, Any]:
    """A values file's mapping (empty for an empty file).

    Raises:
        InvalidInputError: The file is missing, is not YAML or holds no mapping.
    """
    if not path.is_file():
        raise InvalidInputError(f"values file {path} not found", code=CODE)
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"cannot read values file {path}: {exc}", code=CODE) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InvalidInputError(f"values file {path} does not hold a mapping", code=CODE)
    return loaded


def parse_values(data: dict[str, Any]) -> PlatformValues:
    """Values merged into the defaults as Helm does, with each bad field named by path.

    Raises:
        InvalidInputError: ``invalid values: ingress.className: ...``.
    """
    try:
        return load_values(data)
    except ValidationError as exc:
        raise invalid_spec("values", exc, CODE) from exc
