"""The model registry (MLflow's): models logged with a signature and an input example,
versions registered with the lineage of the run that made them, aliases, tags, and
reference statistics of the training features stored next to each version.

A model is named ``name`` (its newest version), ``name/3`` (a version) or
``name@champion`` (an alias), as in MLflow's ``models:/`` URIs.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.monitoring.reference import ReferenceStatistics, reference_statistics
from modelyard.training import tracking
from modelyard.training.tracking import TrackingConfig

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

REFERENCE_TAG = "modelyard.reference_statistics"  # the artifact URI of the statistics
REFERENCE_FILE = "reference_statistics.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MODEL_ID = re.compile(r"^models:/(m-[0-9a-f]+)$")


class ModelNotFoundError(NotFoundError):
    default_code = "model/not_found"


@dataclass(frozen=True)
class ModelRef:
    """``name``, ``name/version`` or ``name@alias``."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        text = text.removeprefix("models:/")
        name, at, alias = text.partition("@")
        if at:
            ref = cls(name, alias=alias)
        else:
            name, slash, version = text.partition("/")
            if slash and not version.isdigit():
                raise InvalidInputError(
                    f"{text!r}: a version is a number, as in 'name/3'", code="model/invalid_ref"
                )
            ref = cls(name, version=version or None)
        if not _NAME.match(ref.name) or (at and not _NAME.match(alias)):
            raise InvalidInputError(
                f"{text!r} is not a model: use 'name', 'name/3' or 'name@alias'",
                code="model/invalid_ref",
            )
        return ref

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version}" if self.version else self.name

    @property
    def uri(self) -> str:
        return f"models:/{self}"


# -- logging a model from training code -------------------------------------------------


def log_model(
    model: Any,
    *,
    input_example: Any,
    name: str = "model",
    signature: Any = None,
) -> str:
    """Log ``model`` in the current run with the flavour that fits it (scikit-learn,
    LightGBM, PyTorch, or an ``mlflow.pyfunc.PythonModel``) and a signature inferred from
    ``input_example`` and the model's own prediction on it. Returns the model's URI, to
    register.

    Raises:
        InvalidInputError: a model of a kind MLflow has no flavour for here.
    """
    tracking.require_mlflow()
    import mlflow
    from mlflow.models import infer_signature

    tracking.ensure_active_run()
    flavor = _flavor(model)
    if signature is None:  # a PythonModel's predict wants a context: its inputs only
        prediction = model.predict(input_example) if flavor != "pyfunc" else None
        signature = infer_signature(input_example, prediction)
    kwargs: dict[str, Any] = {"name": name, "signature": signature, "input_example": input_example}
    if flavor == "pyfunc":
        kwargs["pip_requirements"] = [f"mlflow=={mlflow.__version__}"]
        info = mlflow.pyfunc.log_model(python_model=model, **kwargs)
    else:
        module = getattr(mlflow, flavor)
        # The flavour's own requirements: MLflow's inference of them re-imports the model
        # in a subprocess and costs seconds per model.
        kwargs["pip_requirements"] = module.get_default_pip_requirements()
        if flavor == "sklearn":
            kwargs["skops_trusted_types"] = own_types(model)
        info = module.log_model(model, **kwargs)
    return str(info.model_uri)


def own_types(model: Any) -> list[str]:
    """The types skops (MLflow's format for scikit-learn models) does not trust by
    default in ``model``: trusted here, since the model was built by the code logging
    it, so that loading it later (the server, ``mlflow.sklearn.load_model``) works."""
    import skops.io  # type: ignore[import-untyped]

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def _flavor(model: Any) -> str:
    module = type(model).__module__.split(".")[0]
    if module == "lightgbm":
        return "lightgbm"
    if module == "sklearn" or (hasattr(model, "fit") and hasattr(model, "get_params")):
        return "sklearn"
    if module == "torch" or any(c.__module__.startswith("torch.") for c in type(model).__mro__):
        return "pytorch"
    import mlflow.pyfunc

    if isinstance(model, mlflow.pyfunc.PythonModel):
        return "pyfunc"
    raise InvalidInputError(
        f"cannot log a {type(model).__qualname__}: log scikit-learn, LightGBM or PyTorch "
        "models, or wrap it in an mlflow.pyfunc.PythonModel",
        code="model/unsupported",
    )


# -- registering ------------------------------------------------------------------------


def register(
    model_uri: str,
    name: str,
    *,
    config: TrackingConfig | None = None,
    aliases: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    reference: pa.Table | pa.RecordBatchReader | str | Path | None = None,
    features: Sequence[str] | None = None,
    description: str | None = None,
) -> ModelVersion:
    """Register ``model_uri`` (``runs:/<run>/model``, ``models:/m-...`` or a folder) as
    a new version of ``name``.

    The version carries the lineage tags of the run that made it (project, job or
    pipeline run, task, input digests, code version), ``tags``, and ``aliases`` (moved
    from older versions). With ``reference`` (a table, or a Parquet file or folder read
    in one streaming pass), the statistics of its ``features`` are stored next to the
    model and named by the version's ``modelyard.reference_statistics`` tag. ``config``
    defaults to the store this process logs to.
    """
    config = config or TrackingConfig.current()
    ModelRef.parse(name)
    for alias in aliases:
        check_alias(name, alias)
    client = config.client()
    import mlflow
    from mlflow.exceptions import MlflowException

    statistics = (
        reference_statistics(reference, features=features) if reference is not None else None
    )
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(config.tracking_uri)
    try:
        # The lineage goes in with the version, in one request: no version without it.
        lineage = _lineage_of(client, model_uri)
        version = mlflow.register_model(model_uri, name, tags={**lineage, **(tags or {})})
    except MlflowException as exc:
        raise InvalidInputError(
            f"cannot register {model_uri!r} as {name!r}: {exc.message}", code="model/invalid"
        ) from exc
    if statistics is not None:
        uri = _store_statistics(client, version, statistics)
        client.set_model_version_tag(name, version.version, REFERENCE_TAG, uri)
    if description:
        client.update_model_version(name, version.version, description=description)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)


def _lineage_of(client: MlflowClient, model_uri: str) -> dict[str, str]:
    """The lineage tags of the run that made the model (``runs:/<run>/...`` or a logged
    model's source run); none for a model from a folder."""
    run_id = None
    logged = _MODEL_ID.match(model_uri)
    if logged is not None:
        run_id = client.get_logged_model(logged.group(1)).source_run_id
    elif model_uri.startswith("runs:/"):
        run_id = model_uri.removeprefix("runs:/").partition("/")[0]
    if not run_id:
        return {}
    run_tags = client.get_run(run_id).data.tags
    return {key: run_tags[key] for key in tracking.LINEAGE_TAGS if run_tags.get(key)}


def _store_statistics(
    client: MlflowClient, version: ModelVersion, statistics: ReferenceStatistics
) -> str:
    """Write the statistics next to the model (in its logged model's artifacts, else in
    its run's) and return their artifact URI."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / REFERENCE_FILE
        path.write_text(statistics.model_dump_json())
        model_id = _MODEL_ID.match(version.source or "")
        # Keyed by name and version: one logged model may be registered more than once.
        folder_name = f"modelyard/{version.name}/v{version.version}"
        if model_id is not None:
            client.log_model_artifact(model_id.group(1), str(path), folder_name)
            location = client.get_logged_model(model_id.group(1)).artifact_location
            return f"{location}/{folder_name}/{REFERENCE_FILE}"
        if version.run_id:
            client.log_artifact(version.run_id, str(path), folder_name)
            location = client.get_run(version.run_id).info.artifact_uri
            return f"{location}/{folder_name}/{REFERENCE_FILE}"
    raise InvalidInputError(
        f"version {version.version} of {version.name!r} has neither a logged model nor a "
        "run to keep its reference statistics next to",
        code="model/no_home_for_statistics",
    )


def load_statistics(config: TrackingConfig, ref: ModelRef) -> ReferenceStatistics | None:
    """A version's reference statistics, if it has them."""
    import mlflow.artifacts

    version = resolve(config, ref)
    uri = version.tags.get(REFERENCE_TAG)
    if not uri:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=folder, tracking_uri=config.tracking_uri
        )
        return ReferenceStatistics.model_validate_json(Path(path).read_text())


# -- reading ----------------------------------------------------------------------------


def resolve(config: TrackingConfig, ref: ModelRef) -> ModelVersion:
    """The version a reference names (the newest, without version or alias)."""
    from mlflow.exceptions import MlflowException

    client = config.client()
    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        if ref.version:
            return client.get_model_version(ref.name, ref.version)
        versions = client.search_model_versions(
            f"name = '{ref.name}'", order_by=["version_number DESC"], max_results=1
        )
    except MlflowException as exc:
        raise ModelNotFoundError(f"model {str(ref)!r} does not exist: {exc.message}") from exc
    if not versions:
        raise ModelNotFoundError(f"model {ref.name!r} has no versions")
    return versions[0]


def check_alias(name: str, alias: str) -> None:
    """Aliases are names; ``latest`` and ``v<number>`` are MLflow's own and refused."""
    ModelRef.parse(f"{name}@{alias}")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise InvalidInputError(
            f"{alias!r} cannot be an alias: 'latest' and 'v<number>' name versions",
            code="model/invalid_alias",
        )


def set_alias(config: TrackingConfig, name: str, alias: str, version: str) -> None:
    """Point ``name@alias`` at ``version`` (moving it from another version)."""
    check_alias(name, alias)
    resolve(config, ModelRef(name, version=version))
    config.client().set_registered_model_alias(name, alias, version)


def delete_alias(config: TrackingConfig, name: str, alias: str) -> None:
    resolve(config, ModelRef(name, alias=alias))
    config.client().delete_registered_model_alias(name, alias)


@dataclass(frozen=True)
class VersionFacts:
    """A version with what its run recorded: for ``models show`` and ``compare``."""

    version: ModelVersion
    metrics: dict[str, float]
    params: dict[str, str]
    run_status: str | None
    run_tags: dict[str, str]
    signature: dict[str, Any] | None


def facts(config: TrackingConfig, ref: ModelRef) -> VersionFacts:
    version = resolve(config, ref)
    if not version.run_id:
        return VersionFacts(version, {}, {}, None, {}, _signature(config, version))
    run = config.client().get_run(version.run_id)
    return VersionFacts(
        version,
        dict(run.data.metrics),
        dict(run.data.params),
        run.info.status,
        dict(run.data.tags),
        _signature(config, version),
    )


def _signature(config: TrackingConfig, version: ModelVersion) -> dict[str, Any] | None:
    """The signature in the version's MLmodel file, read from ``config``'s store."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    if not version.source:
        return None
    location = version.source
    logged = _MODEL_ID.match(location)
    if logged is not None:  # a logged model: its own artifact location
        location = config.client().get_logged_model(logged.group(1)).artifact_location
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/MLmodel",
                dst_path=folder,
                tracking_uri=config.tracking_uri,
                registry_uri=config.tracking_uri,
            )
            signature = Model.load(path).signature
        except (MlflowException, OSError):
            return None
    if signature is None:
        return None
    value: dict[str, Any] = json.loads(json.dumps(signature.to_dict()))
    return value
