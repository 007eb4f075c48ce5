"""Commands that act on this machine's store directly: init, up, server, db."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Annotated

import typer
import uvicorn

from modelyard.api import create_app
from modelyard.auth.secret_box import ensure_key_file
from modelyard.cli.output import OutputFormat, OutputOption, console, emit_message
from modelyard.client import Credentials, save_credentials
from modelyard.config import Settings
from modelyard.services.identity import bootstrap_superuser
from modelyard.store import migrate
from modelyard.store.db import opened_engine, session_factory, transaction

db_app = typer.Typer(help="The metadata store's schema.", no_args_is_help=True)

HostOption = Annotated[str | None, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on.")]


def prepare_home(settings: Settings) -> bool:
    """Create the home folder and key file, and bring the schema up to date.

    Returns whether a new secret key file was created.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    created_key = ensure_key_file(settings)
    with opened_engine(settings.resolved_database_url) as engine:
        migrate.upgrade(engine)
    return created_key


def init(
    admin: Annotated[str, typer.Option(help="Name of the first superuser.")] = "admin",
    login: Annotated[
        bool, typer.Option(help="Also store the new token as this machine's credentials.")
    ] = True,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create the home folder, key file and schema, and the first superuser with a token."""
    settings = Settings()
    with console.status("preparing the metadata store"):
        created_key = prepare_home(settings)
    with (
        opened_engine(settings.resolved_database_url) as engine,
        transaction(session_factory(engine)) as session,
    ):
        issued = bootstrap_superuser(session, settings, admin)
    url = f"http://{settings.host}:{settings.port}"
    if login:
        save_credentials(Credentials(url=url, token=issued.token))
    if output is OutputFormat.json:
        emit_message(
            "initialised",
            output,
            home=str(settings.home),
            superuser=admin,
            token=issued.token,
            key_file_created=created_key,
        )
        return
    console.print(f"[green]initialised[/green] {settings.home}")
    console.print(f"superuser: [bold]{admin}[/bold]")
    console.print("token (shown once, store it now):")
    console.print(issued.token, soft_wrap=True, highlight=False)


def _serve(
    settings: Settings, host: str | None, port: int | None, *, controllers: bool = False
) -> None:
    from modelyard.monitoring.logging import configure_logging

    configure_logging(settings.log_level, json_output=settings.log_json)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; this handler
    # turns that into a clean exit 0, which is what a graceful stop is.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(settings, controllers=controllers),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_seconds),
        proxy_headers=settings.trust_forwarded_for,
    )


def up(host: HostOption = None, port: PortOption = None) -> None:
    """Prepare the home and schema, then run the API server and the controllers (the
    scheduler and the run executor on this machine's worker pool)."""
    settings = Settings()
    prepare_home(settings)
    _serve(settings, host, port, controllers=True)


def controllers(
    metrics_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of /metrics (0: do not serve).")
    ] = 9420,
) -> None:
    """Run the controllers alone, without the API: the scheduler, the run and job
    executors and the deployment controller (a Kubernetes Deployment of one replica;
    schema migrations are someone else's job). Stops cleanly on SIGTERM."""
    from prometheus_client import start_http_server

    from modelyard.controllers import ControlPlane
    from modelyard.monitoring.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, json_output=settings.log_json)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with opened_engine(settings.resolved_database_url) as engine:
        control = ControlPlane(settings, session_factory(engine))
        control.start()
        metrics_server = None
        try:
            if metrics_port and control.executor is not None:
                metrics_server, _ = start_http_server(
                    metrics_port, registry=control.executor.engine.metrics.registry
                )
            stopping.wait()
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            control.stop()


def server(host: HostOption = None, port: PortOption = None) -> None:
    """Run the API server alone (schema migrations are someone else's job, e.g. a Job)."""
    _serve(Settings(), host, port)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply schema migrations."""
    with opened_engine(Settings().resolved_database_url) as engine:
        migrate.upgrade(engine, revision)
        console.print(f"schema at revision {migrate.current_revision(engine)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Option(help="Target revision, e.g. -1 or base.")],
) -> None:
    """Revert schema migrations."""
    with opened_engine(Settings().resolved_database_url) as engine:
        migrate.downgrade(engine, revision)
        console.print(f"schema at revision {migrate.current_revision(engine) or 'empty'}")


@db_app.command("current")
def db_current() -> None:
    """Show the schema's revision and whether it is the newest."""
    with opened_engine(Settings().resolved_database_url) as engine:
        current = migrate.current_revision(engine)
        state = "up to date" if migrate.is_current(engine) else "outdated"
    console.print(f"{current or 'empty'} ({state})")
