"""modelyard in one minute: initialise a throw-away home, run the server, use the API, stop it.

Run it with ``make demo`` (or ``.venv/bin/python examples/quickstart.py``). Everything lives
in a temporary folder that is removed at the end, unless ``MODELYARD_DEMO_HOME`` names a
folder to use (and keep) instead. Your own credentials and settings are never touched.

Steps:
 1. ``modelyard init``: the metadata store, the secret key and the first superuser.
 2. ``modelyard up``: the API server on a free loopback port; wait for ``/readyz``.
 3. As the superuser, through ``modelyard.client.ModelyardClient``: create the project
    ``credit-risk``, the user ``alice`` (an editor there) and the secret ``DB_PASSWORD``.
 4. List projects, members, secrets and the newest audit events in tables.
 5. Read a few lines of ``/metrics``.
 6. Stop the server with SIGTERM and check that it shuts down gracefully.
 7. The taxi pipeline here, twice (the second run entirely cached), and a backfill.
 8. The taxi fare model trained, tuned (Optuna), tracked (MLflow) and registered as
    ``taxi-fare@champion`` by one command; ``modelyard models show`` traces it back to
    the feature table it learned from.

The exit code is 0 when every step worked, and non-zero with a message otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from modelyard.client import ModelyardClient
from modelyard.errors import ExitCode, ModelyardError
from modelyard.specs.identity import UserCreate
from modelyard.specs.projects import MemberAdd, ProjectCreate, SecretPut

PROJECT = "credit-risk"
USER = "alice"
SECRET = "DB_PASSWORD"  # noqa: S105  (the secret's name, not its value)
READY_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 60.0
SHUTDOWN_COMPLETE = "Application shutdown complete"

console = Console()


class DemoError(Exception):
    """A step failed; the message says which and why."""


# -- plumbing -----------------------------------------------------------------------------


def modelyard_executable() -> Path:
    """The ``modelyard`` console script of the interpreter running this demo."""
    bin_dir = Path(sys.executable).parent
    for name in ("modelyard", "modelyard.exe"):
        candidate = bin_dir / name
        if candidate.is_file():
            return candidate
    raise DemoError(
        f"no 'modelyard' executable next to {sys.executable}; install the project first "
        "(make demo does: pip install -e .)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def demo_environment(home: Path) -> dict[str, str]:
    """This process's environment without MODELYARD_*/OTEL_* settings, pointed at ``home``.

    The credentials file and config folder live inside ``home`` too, so the demo never
    overwrites the credentials of a real installation.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "OTEL_"))}
    env["MODELYARD_HOME"] = str(home)
    env["MODELYARD_CREDENTIALS"] = str(home / "credentials.json")
    env["XDG_CONFIG_HOME"] = str(home / "config")
    return env


def log_tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return "(no server log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"


def step(number: int, title: str) -> None:
    console.rule(f"[bold cyan]{number}. {title}")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*("-" if cell is None else str(cell) for cell in row))
    return out


def short(moment: Any) -> str:
    return moment.strftime("%H:%M:%S") if hasattr(moment, "strftime") else str(moment)


# -- the steps ------------------------------------------------------------------------------


def init(executable: Path, env: dict[str, str], home: Path) -> str:
    """Run ``modelyard init`` and return the superuser's token."""
    with console.status("modelyard init: creating the store, the key and the superuser"):
        done = subprocess.run(  # noqa: S603  (our own executable, fixed arguments)
            [str(executable), "init", "--output", "json", "--no-login"],
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    if done.returncode == ExitCode.CONFLICT:
        raise DemoError(
            f"{home} is already initialised; point MODELYARD_DEMO_HOME at an empty folder "
            "(or unset it to use a temporary one)"
        )
    if done.returncode != 0:
        raise DemoError(f"modelyard init exited {done.returncode}:\n{done.stderr.strip()}")
    try:
        answer = json.loads(done.stdout)
        token = str(answer["token"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DemoError(f"modelyard init printed no token: {done.stdout!r}") from exc
    key_file = home / "secret.key"
    mode = key_file.stat().st_mode & 0o777
    console.print(f"[green]✓[/green] initialised {home}")
    console.print(f"  store      {home / 'modelyard.db'}")
    console.print(f"  secret key {key_file} (mode {mode:04o})")
    console.print(f"  superuser  {answer['superuser']}, token {token[:12]}… (shown once)")
    if mode != 0o600:
        raise DemoError(f"the secret key file has mode {mode:04o}, not 0600")
    return token


def wait_until_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> float:
    """Poll ``/readyz`` until it answers 200; return the seconds it took."""
    started = time.monotonic()
    deadline = started + READY_TIMEOUT_S
    last = "no answer yet"
    with console.status(f"waiting for {url}/readyz"), httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise DemoError(
                    f"the server exited with status {server.returncode} before it was ready:\n"
                    f"{log_tail(log)}"
                )
            try:
                response = http.get(f"{url}/readyz")
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 200:
                    return time.monotonic() - started
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            time.sleep(0.1)
    raise DemoError(f"the server was not ready within {READY_TIMEOUT_S:.0f} s ({last})")


def use_the_api(url: str, token: str) -> dict[str, Any]:
    """Everything the superuser does through the Python client; returns facts to summarise."""
    facts: dict[str, Any] = {}
    password = secrets.token_urlsafe(24)
    with ModelyardClient(url, token) as api:
        me = api.whoami()
        console.print(f"signed in as [bold]{me.name}[/bold] (superuser: {me.is_superuser})")

        project = api.create_project(
            ProjectCreate(
                name=PROJECT, description="Probability-of-default models", labels={"team": "risk"}
            )
        )
        console.print(f"[green]✓[/green] created project [bold]{project.name}[/bold]")
        user = api.create_user(
            UserCreate(name=USER, display_name="Alice Analyst", email="alice@example.com")
        )
        console.print(f"[green]✓[/green] created user [bold]{user.name}[/bold]")
        member = api.add_member(PROJECT, MemberAdd(user=USER, role="editor"))
        console.print(f"[green]✓[/green] added {member.user} to {PROJECT} as {member.role}")
        secret = api.put_secret(
            PROJECT, SECRET, SecretPut(value=password, description="warehouse password")
        )
        console.print(
            f"[green]✓[/green] stored secret [bold]{secret.name}[/bold] "
            f"(version {secret.version}; the value is encrypted and never shown again)"
        )
        console.print(
            f"  ({USER} would sign in with a token of her own: a user creates tokens for "
            "themselves, so the superuser cannot hand one out here)"
        )

        step(4, "What the platform holds now")
        projects = api.list_projects().items
        console.print(
            table(
                "projects",
                ("name", "description", "labels", "created by", "version"),
                [
                    (
                        p.name,
                        p.description,
                        ", ".join(f"{k}={v}" for k, v in p.labels.items()),
                        p.created_by,
                        p.version,
                    )
                    for p in projects
                ],
            )
        )
        members = api.list_members(PROJECT).items
        console.print(
            table(
                f"members of {PROJECT}",
                ("user", "role", "since"),
                [(m.user, m.role, short(m.created_at)) for m in members],
            )
        )
        stored = api.list_secrets(PROJECT).items
        console.print(
            table(
                f"secrets of {PROJECT} (names only)",
                ("name", "description", "version", "created by"),
                [(s.name, s.description, s.version, s.created_by) for s in stored],
            )
        )
        events = api.list_audit(limit=8).items
        console.print(
            table(
                "audit log (newest first)",
                ("at", "actor", "action", "outcome", "project", "resource"),
                [
                    (short(e.at), e.actor, e.action, e.outcome, e.project, e.resource_name)
                    for e in events
                ],
            )
        )

        raw = api.request("GET", f"/api/v1/projects/{PROJECT}/secrets").text
        if password in raw:
            raise DemoError("the secrets listing returned a secret value")
        roles = {m.user: m.role for m in members}
        if roles.get(USER) != "editor":
            raise DemoError(f"{USER} should be an editor of {PROJECT}, the API says {roles}")
        if [s.name for s in stored] != [SECRET]:
            raise DemoError(f"expected the one secret {SECRET}, found {[s.name for s in stored]}")
        actions = {e.action for e in events}
        missing = {"project.create", "user.create", "member.add", "secret.create"} - actions
        if missing:
            raise DemoError(f"the audit log lacks {sorted(missing)}")

    facts.update(
        projects=len(projects),
        members=len(members),
        secrets=len(stored),
        audit_events=len(events),
    )
    return facts


def show_metrics(url: str) -> int:
    response = httpx.get(f"{url}/metrics", timeout=5.0)
    response.raise_for_status()
    lines = [
        line
        for line in response.text.splitlines()
        if line.startswith("modelyard_http_requests_total{")
    ]
    if not lines:
        raise DemoError("/metrics has no modelyard_http_requests_total samples")
    console.print(f"[bold]{url}/metrics[/bold] (modelyard_http_requests_total, a few lines):")
    for line in lines[:6]:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    if len(lines) > 6:
        console.print(f"  … and {len(lines) - 6} more")
    return len(lines)


def stop(server: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM the server and check that it shuts down gracefully within the time limit."""
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    with console.status("SIGTERM sent; waiting for a graceful shutdown"):
        try:
            code = server.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise DemoError(
                f"the server did not stop within {SHUTDOWN_TIMEOUT_S:.0f} s of SIGTERM"
            ) from exc
    took = time.monotonic() - started
    if code != 0 or SHUTDOWN_COMPLETE not in log.read_text(errors="replace"):
        raise DemoError(f"the server exited with status {code} after SIGTERM:\n{log_tail(log)}")
    verdict = f"graceful, exit status 0, in {took:.1f} s"
    console.print(f"[green]✓[/green] shutdown: {verdict}")
    return verdict


# -- main -----------------------------------------------------------------------------------


@contextmanager
def demo_home() -> Iterator[tuple[Path, bool]]:
    """(home, kept): MODELYARD_DEMO_HOME if set (kept), else a temporary folder (removed)."""
    chosen = os.environ.get("MODELYARD_DEMO_HOME")
    if chosen:
        home = Path(chosen).expanduser().absolute()
        home.mkdir(parents=True, exist_ok=True)
        yield home, True
        return
    folder = Path(tempfile.mkdtemp(prefix="modelyard-demo-"))
    try:
        yield folder / "home", False
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_demo(home: Path) -> dict[str, Any]:
    started = time.monotonic()
    executable = modelyard_executable()
    env = demo_environment(home)

    step(1, "modelyard init")
    token = init(executable, env, home)

    step(2, "modelyard up")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home / "server.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(  # noqa: S603  (our own executable, fixed arguments)
            [str(executable), "up", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        ready_in = wait_until_ready(url, server, log)
        console.print(f"[green]✓[/green] server ready at {url} in {ready_in:.1f} s (log: {log})")

        step(3, "the superuser at work, through modelyard.client.ModelyardClient")
        facts = use_the_api(url, token)

        step(4, "a pipeline run queued on the server, driven by its run executor")
        facts["server_run"] = run_on_server(executable, env, url, token)

        step(5, "metrics")
        facts["metric_series"] = show_metrics(url)

        step(6, "shutdown")
        facts["shutdown"] = stop(server, log)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)

    step(7, "a pipeline: the taxi example, then the same run again (all cached)")
    facts["pipeline"] = run_taxi_pipeline(executable, env)

    step(8, "backfill: the taxi pipeline once per day, each run covering its day")
    facts["backfill"] = backfill_taxi(executable, env)

    step(9, "training: the taxi fare model tuned, tracked in MLflow and registered")
    facts["training"] = train_taxi_model(executable, env)
    facts.update(home=home, url=url, seconds=time.monotonic() - started)
    return facts


TAXI_PIPELINE = Path(__file__).resolve().parent / "taxi" / "pipeline.py"
TAXI_ROWS = 200_000


def run_taxi_pipeline(executable: Path, env: dict[str, str]) -> str:
    """Run the taxi pipeline twice on the demo home; the second run must be all cached."""
    target = f"{TAXI_PIPELINE}:taxi"
    first = subprocess.run(  # noqa: S603  (our own executable, fixed arguments)
        [str(executable), "run", target, "-P", f"rows={TAXI_ROWS}"],
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_TIMEOUT_S * 5,
        check=False,
    )
    if first.returncode != 0:
        raise DemoError(f"the taxi pipeline failed (exit code {first.returncode})")
    second = subprocess.run(  # noqa: S603
        [str(executable), "run", target, "-P", f"rows={TAXI_ROWS}", "-o", "json"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S * 5,
        check=False,
    )
    if second.returncode != 0:
        raise DemoError(f"the second taxi run failed: {second.stderr.strip()[-500:]}")
    shown = subprocess.run(  # noqa: S603
        [str(executable), "runs", "show", json.loads(second.stdout)["run_id"]],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.stdout.count("│ cached") < 8:
        raise DemoError(f"the second taxi run was not fully cached:\n{shown.stdout}")
    console.print(shown.stdout, highlight=False, markup=False)
    return f"{TAXI_ROWS:,} trips through 9 tasks; the second run was entirely cached"


SERVER_ROWS = 20_000


def run_on_server(executable: Path, env: dict[str, str], url: str, token: str) -> str:
    """``modelyard run`` with MODELYARD_URL set: queued through the API, run by ``up``."""
    remote = {**env, "MODELYARD_URL": url, "MODELYARD_TOKEN": token}
    target = f"{TAXI_PIPELINE}:taxi"
    pipeline_command(executable, remote, "the run on the server", "run", target, "-p", PROJECT)
    return f"{SERVER_ROWS:,} trips, queued through the API and run by the server's executor"


BACKFILL_DAYS = ("2024-01-01", "2024-01-03")


def backfill_taxi(executable: Path, env: dict[str, str]) -> str:
    """One run per day (the pipeline is scheduled @daily), here, with a progress bar."""
    target = f"{TAXI_PIPELINE}:taxi"
    start, end = BACKFILL_DAYS
    pipeline_command(
        executable, env, "the backfill", "backfill", target, "--start", start, "--end", end
    )
    return f"3 daily runs, {start} to {end}, each over its own day"


TAXI_TRAIN = Path(__file__).resolve().parent / "taxi" / "train.py"
TRAIN_ROWS, TRAIN_TRIALS = 50_000, 4


def train_taxi_model(executable: Path, env: dict[str, str]) -> str:
    """One command trains, tunes and registers ``taxi-fare``; ``models show`` then traces
    the version back to the feature table it learned from."""
    done = subprocess.run(  # noqa: S603  (our own executable, fixed arguments)
        [
            str(executable),
            "run",
            f"{TAXI_TRAIN}:taxi_train",
            "-P",
            f"rows={TRAIN_ROWS}",
            "-P",
            f"trials={TRAIN_TRIALS}",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_TIMEOUT_S * 10,
        check=False,
    )
    if done.returncode != 0:
        raise DemoError(f"training the taxi model failed (exit code {done.returncode})")
    shown = subprocess.run(  # noqa: S603
        [str(executable), "models", "show", "taxi-fare@champion"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S * 2,
        check=False,
    )
    if shown.returncode != 0 or "produced by taxi_train run" not in shown.stdout:
        raise DemoError(f"the registered model shows no lineage:\n{shown.stdout}{shown.stderr}")
    console.print(shown.stdout, highlight=False, markup=False)
    return (
        f"taxi-fare@champion: {TRAIN_TRIALS} trials, the best registered with its lineage "
        "and reference statistics"
    )


def pipeline_command(executable: Path, env: dict[str, str], what: str, *args: str) -> None:
    """Run a ``modelyard`` pipeline command on the demo's small taxi sample, live."""
    done = subprocess.run(  # noqa: S603  (our own executable, fixed arguments)
        [str(executable), *args, "-P", f"rows={SERVER_ROWS}"],
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_TIMEOUT_S * 5,
        check=False,
    )
    if done.returncode != 0:
        raise DemoError(f"{what} failed (exit code {done.returncode})")


def summary(facts: dict[str, Any], kept: bool) -> Panel:
    where = f"{facts['home']} (kept)" if kept else "a temporary folder (removed)"
    lines = [
        f"home          {where}",
        f"server        {facts['url']}, modelyard up",
        f"project       {PROJECT} ({facts['projects']} project(s) in total)",
        f"members       {facts['members']}: admin (admin) and {USER} (editor)",
        f"secrets       {facts['secrets']}: {SECRET}, value never printed or returned",
        f"audit events  {facts['audit_events']} shown, newest first",
        f"metrics       {facts['metric_series']} modelyard_http_requests_total series",
        f"shutdown      {facts['shutdown']}",
        f"server run    {facts['server_run']}",
        f"pipeline      {facts['pipeline']}",
        f"backfill      {facts['backfill']}",
        f"training      {facts['training']}",
        f"took          {facts['seconds']:.1f} s",
    ]
    return Panel(
        Text("\n".join(lines)), title="demo finished: every step worked", border_style="green"
    )


def fail(message: str) -> None:
    console.print(Text.assemble(("demo failed: ", "bold red"), message))


def main() -> int:
    try:
        with demo_home() as (home, kept):
            facts = run_demo(home)
            console.print(summary(facts, kept))
    except KeyboardInterrupt:
        console.print("[red]demo interrupted[/red]")
        return 130
    except DemoError as exc:
        fail(str(exc))
        return 1
    except ModelyardError as exc:
        fail(f"the API refused a step ({exc.code}): {exc.message}")
        return 1
    except (OSError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        fail(f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
