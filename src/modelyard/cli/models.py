"""models: the model registry (MLflow's, at MLFLOW_TRACKING_URI or embedded in the home)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from modelyard.cli.output import OutputFormat, OutputOption, console, emit_message
from modelyard.cli.runs import parse_params, store_sessions
from modelyard.config import Settings
from modelyard.pipelines.lineage import lineage
from modelyard.training import registry, tracking, tuning
from modelyard.training.registry import ModelRef, VersionFacts
from modelyard.training.tracking import TrackingConfig

if TYPE_CHECKING:
    from modelyard.monitoring.reference import ReferenceStatistics

models_app = typer.Typer(help="The model registry.", no_args_is_help=True)


def _config() -> TrackingConfig:
    tracking.require_mlflow()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tables only here
    return TrackingConfig.from_settings(Settings())


@models_app.command("list")
def list_models(output: OutputOption = OutputFormat.table) -> None:
    """Registered models with their newest version and aliases."""
    client = _config().client()
    rows = []
    models: list[Any] = []
    token = None
    while True:  # every page, not MLflow's first hundred
        page = client.search_registered_models(order_by=["name ASC"], page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            break
    for model in models:
        versions = client.search_model_versions(
            f"name = '{model.name}'", order_by=["version_number DESC"], max_results=1
        )
        rows.append(
            {
                "name": model.name,
                "latest": str(versions[0].version) if versions else None,
                "aliases": {alias: str(v) for alias, v in (model.aliases or {}).items()},
                "updated": model.last_updated_timestamp,
            }
        )
    if output is OutputFormat.json:
        typer.echo(json.dumps({"items": rows}, indent=2))
        return
    table = Table(title="models", title_justify="left")
    for column in ("name", "latest", "aliases"):
        table.add_column(column)
    for row in rows:
        aliases = ", ".join(f"@{a} → v{v}" for a, v in row["aliases"].items()) or "-"
        table.add_row(str(row["name"]), f"v{row['latest']}", aliases)
    console.print(table)


@models_app.command("register")
def register(
    model_uri: Annotated[str, typer.Argument(help="runs:/<run>/model, models:/m-... or a folder")],
    name: Annotated[str, typer.Option("--name", "-n", help="The registered model's name.")],
    alias: Annotated[list[str] | None, typer.Option(help="An alias to point here.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="key=value")] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="Training features (Parquet file or folder) for reference statistics."),
    ] = None,
    feature: Annotated[
        list[str] | None, typer.Option(help="A feature column (default: all).")
    ] = None,
    description: Annotated[str | None, typer.Option()] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Register a model as a new version, with its run's lineage and, given training
    features, their reference statistics."""
    tags = {key: str(value) for key, value in parse_params(tag).items()}
    with console.status(f"registering {name}"):
        version = registry.register(
            model_uri,
            name,
            config=_config(),
            aliases=tuple(alias or ()),
            tags=tags,
            reference=reference,
            features=feature,
            description=description,
        )
    emit_message(
        f"registered {name} version {version.version}" + "".join(f" @{a}" for a in alias or ()),
        output,
        name=name,
        version=str(version.version),
        aliases=list(alias or ()),
    )


@models_app.command("alias")
def alias(
    name: str,
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
    version: Annotated[str | None, typer.Argument(help="The version; omit with --delete.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Point an alias (e.g. champion, challenger) at a version, or remove it."""
    config = _config()
    if delete:
        registry.delete_alias(config, name, alias_name)
        emit_message(f"removed {name}@{alias_name}", output, name=name, alias=alias_name)
        return
    if version is None:
        raise typer.BadParameter("give the version the alias points to", param_hint="VERSION")
    registry.set_alias(config, name, alias_name, version)
    emit_message(
        f"{name}@{alias_name} → version {version}",
        output,
        name=name,
        alias=alias_name,
        version=version,
    )


@models_app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="name, name/3 or name@alias")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """A version: its aliases, signature, metrics, reference statistics and lineage
    (run, job or pipeline task, code version, input artifacts and who produced them)."""
    config = _config()
    ref = ModelRef.parse(model)
    found = registry.facts(config, ref)
    statistics = registry.load_statistics(config, ModelRef(ref.name, found.version.version))
    producers = _producers(found)
    if output is OutputFormat.json:
        typer.echo(json.dumps(_as_json(found, statistics, producers), indent=2, default=str))
        return
    console.print(_lineage_tree(found, producers))
    if found.signature:
        console.print(_signature_table(found.signature))
    if found.metrics or found.params:
        console.print(_side_by_side([found]))
    if statistics is not None:
        console.print(_statistics_table(statistics))


@models_app.command("compare")
def compare(
    models: Annotated[list[str], typer.Argument(help="Versions: name/1 name@champion ...")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Metrics and parameters of several versions side by side."""
    config = _config()
    found = [registry.facts(config, ModelRef.parse(m)) for m in models]
    if output is OutputFormat.json:
        typer.echo(
            json.dumps(
                {
                    "items": [
                        {
                            "name": f.version.name,
                            "version": str(f.version.version),
                            "metrics": f.metrics,
                            "params": f.params,
                        }
                        for f in found
                    ]
                },
                indent=2,
            )
        )
        return
    console.print(_side_by_side(found))


# -- rendering ----------------------------------------------------------------------------


def _producers(found: VersionFacts) -> dict[str, list[str]]:
    """For each input digest, the pipeline tasks that produced it (from this store)."""
    listed = found.version.tags.get(tracking.INPUTS, "").split(",")
    digests = [d for d in listed if d.startswith("sha256:")]  # not a capped list's summary
    if not digests:
        return {}
    settings = Settings()
    if not (settings.home / "modelyard.db").exists() and settings.database_url is None:
        return {digest: [] for digest in digests}
    with store_sessions(settings) as sessions, sessions() as session:
        return {
            digest: [
                f"{edge.pipeline} run {edge.run_id} · task {edge.task}"
                for edge in lineage(session, digest)
                if edge.direction == "produced"
            ]
            for digest in digests
        }


def _lineage_tree(found: VersionFacts, producers: dict[str, list[str]]) -> Tree:
    version, tags, run_tags = found.version, found.version.tags, found.run_tags
    aliases = " ".join(f"@{a}" for a in version.aliases or ())
    tree = Tree(f"[bold]{version.name}[/bold] version {version.version} {aliases}".rstrip())
    tree.add(f"source {version.source}")
    if version.run_id:
        run = tree.add(f"MLflow run {version.run_id} ({found.run_status})")
        if tags.get(tracking.JOB):
            run.add(f"training job {tags[tracking.JOB]}")
        if tags.get(tuning.STUDY_TAG) or run_tags.get(tuning.STUDY_TAG):
            study = tags.get(tuning.STUDY_TAG) or run_tags.get(tuning.STUDY_TAG)
            trial = run_tags.get(tuning.TRIAL_TAG)
            run.add(f"tuning study {study}" + (f" · trial {trial}" if trial else ""))
        if tags.get(tracking.PIPELINE_RUN):
            run.add(
                f"pipeline {tags.get(tracking.PIPELINE)} run {tags[tracking.PIPELINE_RUN]}"
                f" · task {tags.get(tracking.TASK)}"
            )
        code = [
            f"{label} {tags[key][:12]}"
            for label, key in (("code", tracking.CODE_VERSION), ("git", tracking.GIT_COMMIT))
            if tags.get(key)
        ]
        if code:
            run.add(" · ".join(code))
        if producers:
            inputs = run.add("input artifacts")
            for digest, made_by in producers.items():
                node = inputs.add(digest)
                for producer in made_by:
                    node.add(f"produced by {producer}")
    return tree


def _signature_table(signature: dict[str, Any]) -> Table:
    table = Table(title="signature", title_justify="left")
    table.add_column("")
    table.add_column("schema")
    for part in ("inputs", "outputs"):
        raw = signature.get(part)
        if raw:
            fields = json.loads(raw) if isinstance(raw, str) else raw
            table.add_row(
                part,
                ", ".join(
                    f"{f.get('name', '')}:{f.get('type', f.get('tensor-spec', ''))}".lstrip(":")
                    for f in fields
                ),
            )
    return table


def _side_by_side(found: list[VersionFacts]) -> Table:
    table = Table(title="metrics and parameters", title_justify="left")
    table.add_column("")
    for f in found:
        table.add_column(f"{f.version.name} v{f.version.version}", justify="right")
    for key in sorted({k for f in found for k in f.metrics}):
        table.add_row(key, *(_number(f.metrics.get(key)) for f in found))
    for key in sorted({k for f in found for k in f.params}):
        table.add_row(f"[dim]{key}[/dim]", *(f.params.get(key, "-") for f in found))
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _statistics_table(statistics: ReferenceStatistics) -> Table:
    table = Table(title=f"reference statistics ({statistics.rows:,} rows)", title_justify="left")
    for column in ("feature", "kind", "null rate", "summary"):
        table.add_column(column)
    for name, stats in statistics.features.items():
        if stats.kind == "numeric":
            median = (stats.quantiles or {}).get(0.5)
            summary = (
                f"min {_number(stats.min)} · median {_number(median)}"
                f" · max {_number(stats.max)} · mean {_number(stats.mean)}"
            )
        else:
            top = list(stats.frequencies.items())[:3]
            summary = ", ".join(f"{value} {share:.0%}" for value, share in top)
        null_rate = "-" if stats.null_rate is None else f"{stats.null_rate:.2%}"
        table.add_row(name, stats.kind, null_rate, summary)
    return table


def _as_json(
    found: VersionFacts,
    statistics: ReferenceStatistics | None,
    producers: dict[str, list[str]],
) -> dict[str, Any]:
    version = found.version
    return {
        "name": version.name,
        "version": str(version.version),
        "aliases": list(version.aliases or ()),
        "source": version.source,
        "run_id": version.run_id,
        "run_status": found.run_status,
        "tags": dict(version.tags),
        "metrics": found.metrics,
        "params": found.params,
        "signature": found.signature,
        "lineage": {"inputs": producers},
        "reference_statistics": statistics.model_dump(mode="json") if statistics else None,
    }
