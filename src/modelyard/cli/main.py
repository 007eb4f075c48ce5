"""The ``modelyard`` command: every group, and one place that turns errors into exit codes."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.markup import escape
from typer.exceptions import TyperException

from modelyard._version import __version__
from modelyard.cli import (
    admin,
    artifacts,
    demo,
    deploy,
    identity,
    models,
    projects,
    render,
    runs,
    schedules,
    secrets,
    serve,
    task,
    tracking,
    training,
    tuning,
)
from modelyard.cli.output import err_console
from modelyard.errors import ExitCode, ModelyardError


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="modelyard",
        help="modelyard: pipelines, training, registry, serving and observability.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.command()(admin.init)
    app.command()(admin.up)
    app.command()(demo.demo)
    app.command()(admin.server)
    app.command()(admin.controllers)
    app.command()(identity.login)
    app.command()(identity.logout)
    app.command()(identity.whoami)
    app.add_typer(admin.db_app, name="db")
    app.add_typer(identity.users_app, name="users")
    app.add_typer(identity.tokens_app, name="tokens")
    app.add_typer(projects.projects_app, name="projects")
    app.add_typer(projects.members_app, name="members")
    app.add_typer(projects.audit_app, name="audit")
    app.add_typer(secrets.secrets_app, name="secrets")
    app.command()(runs.run)
    app.add_typer(runs.runs_app, name="runs")
    app.add_typer(schedules.schedules_app, name="schedules")
    app.command()(schedules.backfill)
    app.add_typer(training.train_app, name="train")
    app.command()(tuning.tune)
    app.command()(serve.serve)
    app.command()(serve.predict)
    app.add_typer(models.models_app, name="models")
    app.add_typer(deploy.deploy_app, name="deploy")
    app.command(hidden=True)(deploy.router)
    app.add_typer(task.task_app, name="task", hidden=True)
    app.add_typer(render.render_app, name="render")
    app.add_typer(tracking.mlflow_app, name="mlflow")
    app.add_typer(artifacts.artifacts_app, name="artifacts")

    @app.command()
    def version() -> None:
        """Print the version."""
        typer.echo(__version__)

    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return an exit code that tells the kind of failure."""
    app = build_app()
    try:
        result = app(args=argv, standalone_mode=False)
    except ModelyardError as exc:
        _print_error(exc.code, exc.message)
        return exc.exit_code
    except ValidationError as exc:
        # Location and message only: the offending input may be a secret.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        _print_error("request/invalid", problems)
        return ExitCode.USAGE
    except TyperException as exc:  # click's usage errors, as typer bundles them
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return int(getattr(exc, "exit_code", ExitCode.USAGE))
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    # Without standalone mode click returns a typer.Exit's code instead of raising it.
    return result if isinstance(result, int) else 0


def _print_error(code: str, message: str) -> None:
    err_console.print(
        f"[red]error[/red] ({escape(code)}): {escape(message)}", highlight=False, soft_wrap=True
    )


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
