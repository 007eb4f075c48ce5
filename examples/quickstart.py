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
 9. Serving, on ``modelyard up`` again: ``taxi-fare@champion`` deployed behind a router
    with live traffic; a retrained challenger rolled out by canary (10% -> 50% -> 100%)
    and promoted; a broken release rolled back on its own; a shadow compared.

``--keep`` leaves the server and the deployment running (in ``./modelyard-demo`` unless
``MODELYARD_DEMO_HOME`` names a folder) and prints how to look at them and stop them.

The exit code is 0 when every step worked, and non-zero with a message otherwise.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
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
def demo_home(keep: bool) -> Iterator[tuple[Path, bool]]:
    """(home, kept): MODELYARD_DEMO_HOME if set (kept); with ``keep``, ./modelyard-demo;
    else a temporary folder (removed)."""
    chosen = os.environ.get("MODELYARD_DEMO_HOME") or ("modelyard-demo" if keep else None)
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


def run_demo(home: Path, keep: bool = False) -> dict[str, Any]:
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

    step(10, "serving: deploy, canary, automatic rollback, shadow")
    facts.update(serve_taxi_model(executable, env, home, token, keep))

    step(11, "on a cluster: the same work as Kubernetes objects (modelyard render)")
    facts["kubernetes"] = render_for_kubernetes(executable, env, home)
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


# -- serving ----------------------------------------------------------------------------------

DEPLOY_PROJECT = "mobility"
DEPLOYMENT = "taxi"
CANARY = ("--steps", "10,50,100", "--window", "6", "--min-requests", "30")


class LiveTraffic:
    """Clients calling the endpoint over the V2 protocol in the background, with random
    trips; answers are counted by variant and status."""

    def __init__(self, url: str) -> None:
        meta = httpx.get(f"{url}/v2/models/{DEPLOYMENT}", timeout=10).json()
        self.url = url
        self.inputs = meta["inputs"]
        self.counts: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]
        for thread in self._threads:
            thread.start()

    def _body(self, rng: random.Random) -> dict[str, Any]:
        tensors = []
        for spec in self.inputs:
            integer = spec["datatype"].startswith(("INT", "UINT"))
            value: float = rng.randint(0, 23) if integer else round(rng.uniform(0.2, 12.0), 2)
            tensors.append(
                {"name": spec["name"], "shape": [1], "datatype": spec["datatype"], "data": [value]}
            )
        return {"inputs": tensors}

    def _run(self) -> None:
        rng = random.Random()  # noqa: S311  (synthetic trips)
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                try:
                    answer = http.post(
                        f"{self.url}/v2/models/{DEPLOYMENT}/infer", json=self._body(rng)
                    )
                    key = (answer.headers.get("x-modelyard-variant", "-"), answer.status_code)
                except httpx.HTTPError:
                    key = ("-", 0)
                self.counts[key] = self.counts.get(key, 0) + 1
                time.sleep(0.02)

    def stop(self) -> Table:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return table(
            "live traffic through the router",
            ("variant", "HTTP status", "requests"),
            [(v, code, n) for (v, code), n in sorted(self.counts.items())],
        )


class BrokenFare(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A release that loads and warms up but fails every request."""

    def predict(self, context: Any, model_input: Any) -> Any:
        raise RuntimeError("a broken release: the feature encoder is missing")


def serve_taxi_model(
    executable: Path, env: dict[str, str], home: Path, token: str, keep: bool
) -> dict[str, Any]:
    """``modelyard up`` again, then the deployment's life through ``modelyard deploy``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home / "server-serving.log"
    server_env = {
        **env,
        "MODELYARD_DEPLOYMENT_POLL_SECONDS": "0.5",
        # Stopping this server (here, or with kill when kept) stops the deployment too.
        "MODELYARD_STOP_DEPLOYMENTS_ON_EXIT": "true",
    }
    with log.open("wb") as log_file:
        server = subprocess.Popen(  # noqa: S603  (our own executable, fixed arguments)
            [str(executable), "up", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    remote = {**env, "MODELYARD_URL": url, "MODELYARD_TOKEN": token}
    traffic: LiveTraffic | None = None
    try:
        wait_until_ready(url, server, log)
        with ModelyardClient(url, token) as api:
            api.create_project(ProjectCreate(name=DEPLOY_PROJECT, description="Taxi fares"))

        def deploy(*args: str, capture: bool = False) -> str:
            return cli(executable, remote, "deploy", *args, "-p", DEPLOY_PROJECT, capture=capture)

        console.print("[bold]deploy taxi-fare@champion[/bold] (a router and one replica)")
        created = json.loads(
            deploy(
                "create",
                DEPLOYMENT,
                "--model",
                "models:/taxi-fare@champion",
                "-o",
                "json",
                capture=True,
            )
        )
        endpoint = str(created["endpoint"])
        console.print(f"[green]✓[/green] {DEPLOYMENT} ready at {endpoint}")
        traffic = LiveTraffic(endpoint)

        console.print("[bold]train a challenger[/bold] (another sample, fewer trials)")
        cli(executable, env, "run", f"{TAXI_TRAIN}:taxi_train", "-P", f"rows={TRAIN_ROWS}",
            "-P", "trials=2", "-P", "seed=7")  # fmt: skip
        version = latest_version(executable, env)
        console.print(f"[bold]canary: taxi-fare/{version}[/bold], judged on live traffic")
        deploy("update", DEPLOYMENT, "--model", f"models:/taxi-fare/{version}", *CANARY, "--wait")
        promoted = json.loads(deploy("show", DEPLOYMENT, "-o", "json", capture=True))
        if promoted["spec"]["variants"][0]["model"] != f"models:/taxi-fare/{version}":
            raise DemoError(f"the challenger was not promoted: {promoted['reason']}")

        console.print("[bold]a broken release[/bold], rolled out the same way")
        broken = home / "broken-release"
        save_broken_release(broken, traffic.inputs)
        deploy("update", DEPLOYMENT, "--model", str(broken), *CANARY, "--wait")
        after = json.loads(deploy("show", DEPLOYMENT, "-o", "json", capture=True))
        rolled_back = after["revisions"][0]["change"]
        if not rolled_back.startswith("rolled back") or "error rate" not in rolled_back:
            raise DemoError(f"the broken release was not rolled back: {rolled_back}")
        console.print(f"[green]✓[/green] {rolled_back}")

        console.print("[bold]shadow: the previous champion gets a copy of half the traffic[/bold]")
        deploy("update", DEPLOYMENT, "--shadow", "models:/taxi-fare/1", "--shadow-percent", "50")
        shadowed = wait_for_shadow(executable, remote)
        console.print(deploy("show", DEPLOYMENT, capture=True), highlight=False, markup=False)
        console.print(traffic.stop())
        traffic = None
        if not keep:
            deploy("delete", DEPLOYMENT)
        return {
            "endpoint": endpoint,
            "serving": (
                f"{DEPLOYMENT} at {endpoint}: taxi-fare/{version} promoted by canary, a "
                f"broken release rolled back on its own, {shadowed} shadow comparisons"
            ),
            "server_pid": server.pid if keep else None,
        }
    finally:
        if traffic is not None:
            traffic.stop()
        if not keep or sys.exc_info()[0] is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()


def save_broken_release(folder: Path, inputs: list[dict[str, Any]]) -> None:
    """A model with the deployment's inputs (as its V2 metadata lists them) that raises:
    it starts, then fails every request."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    columns = [ColSpec("double", spec["name"]) for spec in inputs]
    mlflow.pyfunc.save_model(
        folder,
        python_model=BrokenFare(),
        signature=ModelSignature(inputs=Schema(columns)),  # type: ignore[arg-type]
        pip_requirements=["mlflow"],
    )


def latest_version(executable: Path, env: dict[str, str]) -> str:
    listed = json.loads(cli(executable, env, "models", "list", "-o", "json", capture=True))
    items = listed["items"] if isinstance(listed, dict) else listed
    for item in items:
        if item["name"] == "taxi-fare":
            return str(item["latest"])
    raise DemoError(f"taxi-fare is not registered: {listed}")


def wait_for_shadow(executable: Path, remote: dict[str, str]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = json.loads(
            cli(
                executable,
                remote,
                "deploy",
                "show",
                DEPLOYMENT,
                "-p",
                DEPLOY_PROJECT,
                "-o",
                "json",
                capture=True,
            )
        )
        compared = (shown.get("live", {}).get("shadow") or {}).get("requests", 0)
        if compared >= 20:
            return int(compared)
        time.sleep(1)
    raise DemoError("the shadow received no traffic within 60 s")


def render_for_kubernetes(executable: Path, env: dict[str, str], home: Path) -> str:
    """What `helm install` and the controllers would put on a cluster for this demo:
    the platform, the taxi pipeline's task Jobs and schedule, and the deployment."""
    folder = home / "kubernetes"
    folder.mkdir(parents=True, exist_ok=True)
    deployment = folder / "deployment-spec.json"
    deployment.write_text(
        json.dumps(
            {
                "name": DEPLOYMENT,
                "variants": [{"name": "primary", "model": "models:/taxi-fare@champion"}],
                "scaling": {"min_replicas": 2, "max_replicas": 8, "target_inflight": 4},
            }
        )
    )
    renders = {
        "platform.yaml": ["render", "platform"],
        "taxi-pipeline.yaml": ["render", "pipeline", f"{TAXI_PIPELINE}:taxi", "-p", DEPLOY_PROJECT],
        "taxi-deployment.yaml": ["render", "deployment", str(deployment), "-p", DEPLOY_PROJECT],
    }
    rows, total = [], 0
    for name, args in renders.items():
        text = cli(executable, env, *args, capture=True)
        (folder / name).write_text(text)
        kinds = [
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("kind:")
        ]
        counts = {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}
        rows.append((name, len(kinds), ", ".join(f"{n} {k}" for k, n in counts.items())))
        total += len(kinds)
    console.print(table(f"modelyard render -> {folder}", ("file", "objects", "kinds"), rows))
    return f"{total} objects in {folder} (platform, pipeline Jobs and CronJob, deployment)"


def cli(executable: Path, env: dict[str, str], *args: str, capture: bool = False) -> str:
    """Run a ``modelyard`` command; live on the console unless its output is wanted."""
    done = subprocess.run(  # noqa: S603  (our own executable)
        [str(executable), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=capture,
        text=True,
        timeout=COMMAND_TIMEOUT_S * 10,
        check=False,
    )
    if done.returncode != 0:
        detail = (done.stderr or "").strip()[-800:] if capture else ""
        raise DemoError(
            f"modelyard {' '.join(args[:2])} failed (exit code {done.returncode}) {detail}"
        )
    return done.stdout or ""


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
    """Where everything is, what happened, and the commands to look at it."""
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
        f"serving       {facts['serving']}",
        f"kubernetes    {facts['kubernetes']}",
        f"took          {facts['seconds']:.1f} s",
    ]
    if kept:
        env = f"MODELYARD_HOME={facts['home']}"
        lines += [
            "",
            "look at it:",
            f"  {env} modelyard models show taxi-fare@champion",
            f"  {env} modelyard runs list",
            f"  {env} modelyard mlflow ui",
        ]
    if facts.get("server_pid"):
        lines += [
            f"  {env} modelyard deploy show {DEPLOYMENT} -p {DEPLOY_PROJECT} --watch",
            f"  curl {facts['endpoint']}/v2/models/{DEPLOYMENT}",
            f"stop it: kill {facts['server_pid']} (the server, its router and replicas)",
        ]
    return Panel(
        Text("\n".join(lines)), title="demo finished: every step worked", border_style="green"
    )


def fail(message: str) -> None:
    console.print(Text.assemble(("demo failed: ", "bold red"), message))


def main(argv: Sequence[str] | None = None) -> int:
    keep = "--keep" in (sys.argv[1:] if argv is None else argv)
    try:
        with demo_home(keep) as (home, kept):
            facts = run_demo(home, keep)
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
