"""Against a real cluster, when ``KUBECONFIG`` names one (skipped cleanly otherwise).

- Every object ``modelyard render`` makes is sent to the API server with server-side
  apply in dry-run mode: the server's own schemas, admission and installed CRDs judge
  them, and nothing is stored.
- With ``MODELYARD_TEST_IMAGE`` (an image holding modelyard and this repository at its
  working folder) and ``MODELYARD_TEST_VALUES`` (a values file whose ``workloads`` put
  artifacts on S3 both the pods and this machine reach), a real pipeline runs with one
  Job per task attempt.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from modelyard.artifacts import ArtifactStore
from modelyard.pipelines.engine import EngineSettings, RunEngine
from modelyard.runtimes.kubernetes.platform import render_platform
from modelyard.runtimes.kubernetes.platform_values import load_values
from modelyard.runtimes.kubernetes.runtime import (
    KubeCluster,
    KubernetesRuntime,
    load_cluster_settings,
)
from modelyard.runtimes.kubernetes.serving import render_deployment
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.runtimes.kubernetes.training import render_training_job
from modelyard.specs.deployments import DeploymentSpec
from modelyard.specs.runs import RunState
from modelyard.specs.training import TrainingJobSpec
from modelyard.store.db import session_factory
from tests.pipelines import flows
from tests.runtimes.kubernetes.conftest import new_project

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="no cluster: KUBECONFIG unset"),
]

SPECS = Path(__file__).parent / "specs"
# Read at import: the suite's autouse fixture hides MODELYARD_* variables from tests.
IMAGE = os.environ.get("MODELYARD_TEST_IMAGE")


def test_the_api_server_accepts_every_rendered_object() -> None:
    cluster = KubeCluster.from_environment(dry_run=True)
    settings = ClusterSettings()
    objects = render_platform(load_values({"projects": ["fraud"]}))
    objects += render_deployment(
        DeploymentSpec.model_validate(yaml.safe_load((SPECS / "fare.yaml").read_text())),
        settings,
        "fraud",
    )
    objects += render_training_job(
        TrainingJobSpec.model_validate(yaml.safe_load((SPECS / "digits.yaml").read_text())),
        settings,
        "fraud",
    )
    served = [obj for obj in objects if cluster.serves(obj["apiVersion"], obj["kind"])]
    assert served
    for obj in served:
        cluster.apply(obj)


@pytest.mark.skipif(IMAGE is None, reason="MODELYARD_TEST_IMAGE unset: no image to run")
def test_a_pipeline_runs_as_jobs_on_the_cluster(engine: Engine, tmp_path: Path) -> None:
    assert IMAGE is not None
    sessions = session_factory(engine)
    project_id = new_project(sessions, "live")
    # The pods and this process must share the artifact store: S3, as the values say.
    settings = load_cluster_settings(Path(os.environ["MODELYARD_TEST_VALUES"]))
    settings = settings.model_copy(update={"image": IMAGE})
    store = ArtifactStore(settings.artifacts.url)
    runtime = KubernetesRuntime(settings, KubeCluster.from_environment())
    run_engine = RunEngine(
        sessions,
        runtime,
        store,
        EngineSettings(artifacts_url=store.url, logs_dir=tmp_path / "logs"),
    )
    try:
        spec = flows.squares.spec("tests/pipelines/flows.py:squares")
        trace_dir = "/tmp"  # noqa: S108 (inside the pods)
        params = flows.squares.validate_params({"trace_dir": trace_dir, "n": 3, "threshold": 1})
        run_id = run_engine.create_run(project_id, spec, params, runtime="kubernetes")
        assert run_engine.execute(run_id) is RunState.SUCCEEDED
    finally:
        run_engine.close()
        runtime.close()
