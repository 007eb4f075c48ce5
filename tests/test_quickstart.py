"""``examples/quickstart.py`` (what ``make demo`` runs), end to end in a subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


@dataclass(frozen=True)
class DemoRun:
    home: Path
    code: int
    out: str
    err: str


def run_demo(home: Path) -> DemoRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "OTEL_"))}
    env.update(MODELYARD_DEMO_HOME=str(home), COLUMNS="200")
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return DemoRun(home=home, code=done.returncode, out=done.stdout, err=done.stderr)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One run of the demo, shared by the tests of this module (it takes a few seconds)."""
    return run_demo(tmp_path_factory.mktemp("demo") / "home")


def test_the_demo_runs_every_step(demo: DemoRun) -> None:
    assert demo.code == 0, f"stdout:\n{demo.out}\nstderr:\n{demo.err}"
    for expected in (
        "1. modelyard init",
        f"✓ initialised {demo.home}",
        "(mode 0600)",
        "✓ server ready at http://127.0.0.1:",
        "signed in as admin (superuser: True)",
        "✓ created project credit-risk",
        "✓ created user alice",
        "✓ added alice to credit-risk as editor",
        "✓ stored secret DB_PASSWORD (version 1",
        "members of credit-risk",
        "secrets of credit-risk (names only)",
        "audit log (newest first)",
        'modelyard_http_requests_total{code="201",method="POST",route="/api/v1/projects"} 1.0',
        "4. a pipeline run queued on the server, driven by its run executor",
        "queued through the API and run by the server's executor",
        "backfill: 3 interval(s)",
        "3 daily runs, 2024-01-01 to 2024-01-03, each over its own day",
        "shutdown: graceful",
        "9. training: the taxi fare model tuned, tracked in MLflow and registered",
        "taxi-fare version 1 @champion",
        "produced by taxi_train run",
        "reference statistics (",
        "taxi-fare@champion: 4 trials",
        "10. serving: deploy, canary, automatic rollback, shadow",
        "✓ taxi ready at http://127.0.0.1:",
        "canary promoted: healthy over",
        "✓ rolled back",
        "shadow: ",
        "live traffic through the router",
        "promoted by canary, a broken release rolled back on its own",
        "11. on a cluster: the same work as Kubernetes objects (modelyard render)",
        "9 Job, 1 CronJob",
        "demo finished: every step worked",
    ):
        assert expected in demo.out, f"{expected!r} missing from:\n{demo.out}"
    lines = demo.out.splitlines()
    assert any("alice" in line and "editor" in line for line in lines)
    assert any("secret.create" in line and "DB_PASSWORD" in line for line in lines)
    assert "demo failed" not in demo.out


def test_the_demo_keeps_a_chosen_home(demo: DemoRun) -> None:
    assert (demo.home / "modelyard.db").is_file()
    assert stat.S_IMODE((demo.home / "secret.key").stat().st_mode) == 0o600
    assert "Application shutdown complete" in (demo.home / "server.log").read_text()
    # init ran with --no-login: the demo stores no credentials, not even in its own home.
    assert not (demo.home / "credentials.json").exists()
    rendered = (demo.home / "kubernetes" / "taxi-deployment.yaml").read_text()
    assert "kind: HorizontalPodAutoscaler" in rendered


def test_the_server_exits_0_on_sigterm(demo: DemoRun) -> None:
    assert "shutdown: graceful, exit status 0" in demo.out


def test_the_demo_leaves_no_process_behind(demo: DemoRun) -> None:
    """Without --keep, the deployment's router and replicas stop with the demo."""
    left = []
    marker = f"MODELYARD_HOME={demo.home}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    assert left == []


def test_the_demo_refuses_an_initialised_home(demo: DemoRun) -> None:
    again = run_demo(demo.home)
    assert again.code == 1
    assert "demo failed" in again.out
    assert "already initialised" in again.out
