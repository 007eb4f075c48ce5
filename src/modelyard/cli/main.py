"""The ``modelyard`` command: every group, and one place that turns errors into exit codes."""

from __future__ import annotations

import sys

import typer
from click.exceptions import ClickException
from pydantic import ValidationError

from modelyard import __version__
from modelyard.cli import admin, identity, projects, secrets
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
    app.command()(admin.server)
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

    @app.command()
    def version() -> None:
        """Print the version."""
        typer.echo(__version__)

    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return an exit code that tells the kind of failure."""
    app = build_app()
    try:
        app(args=argv, standalone_mode=False)
    except ModelyardError as exc:
        err_console.print(f"[red]error[/red] ({exc.code}): {exc.message}", highlight=False)
        return exc.exit_code
    except ValidationError as exc:
        err_console.print(f"[red]error[/red] (request/invalid): {exc}", highlight=False)
        return ExitCode.USAGE
    except ClickException as exc:
        exc.show()
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
