"""tune: a hyperparameter search, on this machine or on Ray Tune, with the best model
registered."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.cli.admin import prepare_home
from modelyard.cli.common import ProjectOption, invalid_spec
from modelyard.cli.output import OutputFormat, OutputOption, console
from modelyard.cli.runs import DEFAULT_PROJECT, parse_params
from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.specs.training import Distribution, TrialOut, TuneResult, TuneSpec
from modelyard.training import registry, tracking, tuning
from modelyard.training.tracking import TrackingConfig


def tune(
    entrypoint: Annotated[str, typer.Argument(help="The objective: module:function or file.py:fn")],
    space: Annotated[
        list[str],
        typer.Option(
            "--space",
            "-S",
            help="name=uniform(a,b) | loguniform(a,b) | int(a,b[,step]) | choice(x,y,...)",
        ),
    ],
    metric: Annotated[str, typer.Option(help="What the search optimises.")],
    direction: Annotated[str, typer.Option(help="minimize or maximize")] = "minimize",
    trials: Annotated[int, typer.Option(min=1, help="Trials the study ends with.")] = 20,
    parallel: Annotated[int, typer.Option(min=1, help="Trials at once.")] = 1,
    pruner: Annotated[str, typer.Option(help="none, median or asha")] = "none",
    study: Annotated[str | None, typer.Option(help="Its name; again to continue it.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-P", help="A fixed key=value.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes per trial.")] = 1,
    trial_timeout: Annotated[float | None, typer.Option(min=0.001, help="Seconds.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    register: Annotated[
        str | None, typer.Option(help="Register the best trial's model under this name.")
    ] = None,
    alias: Annotated[str, typer.Option(help="The alias the registered version gets.")] = "champion",
    reference: Annotated[
        Path | None, typer.Option(help="Training features (Parquet) for reference statistics.")
    ] = None,
    runtime: Annotated[
        str, typer.Option(help="local (Optuna here) or ray (Ray Tune; MODELYARD_RAY_ADDRESS)")
    ] = "local",
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Search hyperparameters with Optuna: each trial runs the objective in its own
    process(es) and child MLflow run; a failing trial is recorded and the search goes on;
    the study continues where it stopped when run again. With --runtime ray the search is
    a Ray Tune experiment (same sampler, runs and result; a run again is a new one)."""
    chosen = _literal_runtime(runtime)
    spec = _spec(
        entrypoint,
        space,
        metric,
        direction,
        trials,
        parallel,
        pruner,
        study,
        param,
        workers,
        trial_timeout,
        seed,
    )
    settings = Settings()
    prepare_home(settings)
    config = TrackingConfig.from_settings(settings) if tracking.mlflow_available() else None
    context = tuning.TuneContext(
        storage_url=settings.resolved_tuning_storage_url,
        workdir=settings.home / "tuning",
        tracking=config,
        project=project,
        ray_address=settings.ray_address,
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
        disable=output is not OutputFormat.table,
    ) as progress:
        bar = progress.add_task(f"study {spec.study}", total=spec.trials, best="")
        best: list[float] = []

        def show(trial: TrialOut) -> None:
            if trial.value is not None:
                best.append(trial.value)
            pick = min if spec.direction == "minimize" else max
            label = f"best {spec.metric} {pick(best):.6g}" if best else ""
            progress.update(bar, advance=1, best=label)
            if trial.state != "complete" and output is OutputFormat.table:
                progress.console.print(f"trial {trial.number} {trial.state}: {trial.reason}")

        result = tuning.tune(spec, context, on_trial=show, runtime=chosen)
    if register and config is not None:
        model_uri = tuning.best_model_uri(config, result)
        with console.status(f"registering {register}"):
            version = registry.register(
                model_uri,
                register,
                config=config,
                aliases=(alias,),
                tags={tuning.STUDY_TAG: spec.study},
                reference=reference,
            )
        result.registered = f"{register}/{version.version}@{alias}"
    _report(result, output)


def _spec(
    entrypoint: str,
    space: list[str],
    metric: str,
    direction: str,
    trials: int,
    parallel: int,
    pruner: str,
    study: str | None,
    param: list[str] | None,
    workers: int,
    trial_timeout: float | None,
    seed: int | None,
) -> TuneSpec:
    try:
        distributions: dict[str, Distribution] = {}
        for item in space:
            name, sep, text = item.partition("=")
            if not sep or not name:
                raise InvalidInputError(
                    f"--space {item!r} is not name=distribution", code="tune/invalid"
                )
            distributions[name.strip()] = Distribution.parse(text)
        return TuneSpec(
            study=study or entrypoint.rpartition(":")[2],
            entrypoint=entrypoint,
            params=parse_params(param),
            space=distributions,
            metric=metric,
            direction=_literal_direction(direction),
            trials=trials,
            parallel=parallel,
            pruner=_literal_pruner(pruner),
            workers=workers,
            trial_timeout=timedelta(seconds=trial_timeout) if trial_timeout else None,
            seed=seed,
        )
    except ValidationError as exc:
        raise invalid_spec("search", exc, "tune/invalid") from exc
    except ValueError as exc:
        raise InvalidInputError(f"invalid search space: {exc}", code="tune/invalid") from exc


def _literal_direction(value: str) -> Literal["minimize", "maximize"]:
    if value == "minimize":
        return "minimize"
    if value == "maximize":
        return "maximize"
    raise InvalidInputError(f"--direction is minimize or maximize, not {value!r}")


def _literal_pruner(value: str) -> Literal["none", "median", "asha"]:
    if value == "none":
        return "none"
    if value == "median":
        return "median"
    if value == "asha":
        return "asha"
    raise InvalidInputError(f"--pruner is none, median or asha, not {value!r}")


def _literal_runtime(value: str) -> tuning.TuneRuntime:
    if value == "local":
        return "local"
    if value == "ray":
        return "ray"
    raise InvalidInputError(
        f"--runtime is {' or '.join(tuning.RUNTIMES)}, not {value!r}", code="tune/invalid"
    )


def _report(result: TuneResult, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        typer.echo(result.model_dump_json(indent=2))
        return
    table = Table(title=f"study {result.study} · {result.metric} ({result.direction})")
    for column in ("trial", "state", result.metric, "params", "seconds", "reason"):
        table.add_column(column)
    best = result.best.number if result.best else None
    for trial in result.trials:
        mark = " ★" if trial.number == best else ""
        table.add_row(
            f"{trial.number}{mark}",
            trial.state,
            "-" if trial.value is None else f"{trial.value:.6g}",
            ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items()),
            "-" if trial.seconds is None else f"{trial.seconds:.1f}",
            trial.reason[:80],
        )
    console.print(table)
    if result.best is not None:
        console.print(
            f"best: trial {result.best.number}, {result.metric} {result.best.value:.6g}"
            + (f"; registered {result.registered}" if result.registered else "")
        )


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
