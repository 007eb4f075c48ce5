"""Running pipelines for real: states, outputs, caching, retries, failures, recovery."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from sqlalchemy import select

from modelyard.errors import InvalidInputError
from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.errors import PipelineDefinitionError
from modelyard.specs.runs import RunState, TaskState
from modelyard.store.db import transaction
from modelyard.store.models import ArtifactLink, Pool, TaskAttempt
from tests.pipelines import flows
from tests.pipelines.conftest import Runner, on_every_runtime

pytestmark = pytest.mark.integration


@on_every_runtime
def test_a_run_maps_joins_branches_and_stores_every_output(runner: Runner) -> None:
    run_id, state = runner.run(flows.squares, trace_dir=str(runner.trace_dir), n=4)
    assert state is RunState.SUCCEEDED
    states = runner.states(run_id)
    assert states == {
        "numbers": "succeeded",
        "square": "succeeded",
        "square[0]": "succeeded",
        "square[1]": "succeeded",
        "square[2]": "succeeded",
        "square[3]": "succeeded",
        "add_up": "succeeded",
        "is_large": "succeeded",
        "shout": "succeeded",
    }
    assert runner.value(run_id, "add_up") == 0 + 1 + 4 + 9
    assert runner.value(run_id, "shout") == "shout: 14"
    assert runner.executions("square") == 4
    row = runner.run_row(run_id)
    assert row.started_at is not None
    assert row.finished_at is not None


def test_a_false_condition_skips_its_tasks(runner: Runner) -> None:
    run_id, state = runner.run(flows.squares, trace_dir=str(runner.trace_dir), n=2)
    assert state is RunState.SUCCEEDED
    assert runner.states(run_id)["shout"] == TaskState.SKIPPED
    assert runner.executions("shout") == 0


@on_every_runtime
def test_tasks_run_on_their_runs_runtime(runner: Runner) -> None:
    run_id, state = runner.run(flows.where_flow)
    assert state is RunState.SUCCEEDED
    assert runner.run_row(run_id).runtime == runner.runtime
    assert runner.value(run_id, "where") == runner.runtime


def test_a_run_on_a_runtime_the_engine_cannot_open_fails_clearly(runner: Runner) -> None:
    engine = RunEngine(runner.sessions, runner.engine.pool, runner.store, runner.engine.settings)
    spec = flows.where_flow.spec("tests/pipelines/flows.py:where_flow")
    run_id = engine.create_run(runner.project_id, spec, {}, runtime="ray")
    assert engine.execute(run_id) is RunState.FAILED
    error = runner.tasks(run_id)["where"].error
    assert error is not None
    assert error["message"] == "this engine runs tasks on the local runtime only, not on 'ray'"
    with pytest.raises(InvalidInputError) as raised:
        engine.create_run(runner.project_id, spec, {}, runtime="mars")
    assert raised.value.code == "runtime/unknown"


@on_every_runtime
def test_a_second_run_is_fully_cached_and_executes_nothing(runner: Runner) -> None:
    trace = str(runner.trace_dir)
    first, _ = runner.run(flows.squares, trace_dir=trace, n=4)
    before = {name: runner.executions(name) for name in ("numbers", "square", "add_up", "shout")}
    second, state = runner.run(flows.squares, trace_dir=trace, n=4)
    assert state is RunState.SUCCEEDED
    after = {name: runner.executions(name) for name in before}
    assert after == before
    cached = {name for name, s in runner.states(second).items() if s == TaskState.CACHED}
    assert {"numbers", "add_up", "shout", "square[0]", "is_large"} <= cached
    assert runner.value(second, "add_up") == runner.value(first, "add_up")


def test_a_changed_input_misses_the_cache_only_where_it_flows(runner: Runner) -> None:
    trace = str(runner.trace_dir)
    runner.run(flows.squares, trace_dir=trace, n=4)
    run_id, _ = runner.run(flows.squares, trace_dir=trace, n=5)
    states = runner.states(run_id)
    assert states["numbers"] == TaskState.SUCCEEDED  # its input n changed
    assert states["square[0]"] == TaskState.CACHED  # same item, same code
    assert states["square[4]"] == TaskState.SUCCEEDED  # a new item
    assert states["add_up"] == TaskState.SUCCEEDED
    assert runner.value(run_id, "add_up") == 30


@on_every_runtime
def test_tables_travel_between_tasks_as_artifacts(runner: Runner) -> None:
    run_id, state = runner.run(flows.tables, rows=50_000)
    assert state is RunState.SUCCEEDED
    produced = runner.tasks(run_id)["table"].output
    assert produced is not None
    assert produced["ref"]["kind"] == "table"
    assert runner.value(run_id, "count_rows") == 50_000
    with runner.sessions() as session:
        links = session.scalars(select(ArtifactLink).where(ArtifactLink.run_id == run_id)).all()
    assert {(link.digest, link.direction) for link in links} >= {
        (produced["ref"]["digest"], "produced"),
        (produced["ref"]["digest"], "consumed"),
    }


@on_every_runtime
def test_retries_with_backoff_until_success(runner: Runner) -> None:
    run_id, state = runner.run(flows.flaky_flow, trace_dir=str(runner.trace_dir), failures=2)
    assert state is RunState.SUCCEEDED
    task = runner.tasks(run_id)["flaky"]
    assert task.attempts == 3
    with runner.sessions() as session:
        attempts = session.scalars(
            select(TaskAttempt)
            .where(TaskAttempt.task_run_id == task.id)
            .order_by(TaskAttempt.number)
        ).all()
    assert [a.state for a in attempts] == ["failed", "failed", "succeeded"]
    assert attempts[0].error is not None
    assert attempts[0].error["type"] == "builtins.ConnectionError"
    assert attempts[0].error["source"] == "user"


def test_retries_run_out(runner: Runner) -> None:
    run_id, state = runner.run(flows.flaky_flow, trace_dir=str(runner.trace_dir), failures=10)
    assert state is RunState.FAILED
    assert runner.tasks(run_id)["flaky"].attempts == 4  # 1 + 3 retries
    assert runner.run_row(run_id).error == {"failed_tasks": ["flaky"]}


@on_every_runtime
def test_an_exception_not_listed_for_retry_fails_at_once(runner: Runner) -> None:
    run_id, state = runner.run(flows.picky_flow, trace_dir=str(runner.trace_dir))
    assert state is RunState.FAILED
    task = runner.tasks(run_id)["picky"]
    assert task.attempts == 1
    assert task.error is not None
    assert task.error["message"] == "a bug, not a blip"
    assert "raise ValueError" in task.error["traceback"]


def test_a_crashed_worker_is_retried_on_its_exit_code(runner: Runner) -> None:
    _run_id, state = runner.run(flows.dying_flow, trace_dir=str(runner.trace_dir))
    assert state is RunState.SUCCEEDED
    with runner.sessions() as session:
        attempts = session.scalars(select(TaskAttempt).order_by(TaskAttempt.number)).all()
    assert [(a.state, a.exit_code) for a in attempts] == [("crashed", 9), ("succeeded", None)]


@on_every_runtime
def test_a_timeout_fails_the_task_and_its_downstream(runner: Runner) -> None:
    started = time.monotonic()
    run_id, state = runner.run(flows.hanging_flow, seconds=30.0)
    assert time.monotonic() - started < 15
    assert state is RunState.FAILED
    states = runner.states(run_id)
    assert states == {"hangs": "failed", "after_hang": "upstream_failed"}
    error = runner.tasks(run_id)["hangs"].error
    assert error is not None
    assert error["kind"] == "timed_out"


def test_an_unstorable_output_is_a_clear_failure(runner: Runner) -> None:
    run_id, state = runner.run(flows.bad_output_flow)
    assert state is RunState.FAILED
    error = runner.tasks(run_id)["returns_object"].error
    assert error is not None
    assert "returned a builtins.object, which cannot be stored" in error["message"]


@on_every_runtime
def test_cancelling_stops_a_running_task(runner: Runner) -> None:
    run_id = runner.start(flows.sleepy_flow, trace_dir=str(runner.trace_dir), seconds=30.0)
    result: dict[str, RunState] = {}
    thread = threading.Thread(target=lambda: result.update(state=runner.engine.execute(run_id)))
    thread.start()
    deadline = time.monotonic() + 20
    while runner.executions("sleepy") == 0:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    runner.engine.request_cancel(run_id)
    thread.join(timeout=20)
    assert result["state"] is RunState.CANCELLED
    assert runner.states(run_id) == {"sleepy": "cancelled"}
    error = runner.tasks(run_id)["sleepy"].error
    assert error is not None
    assert error["kind"] == "cancelled"


def test_a_pool_limits_concurrency_across_tasks(runner: Runner) -> None:
    with transaction(runner.sessions) as session:
        session.add(Pool(name="warehouse", slots=1))
    _run_id, state = runner.run(flows.pooled_flow, trace_dir=str(runner.trace_dir))
    assert state is RunState.SUCCEEDED
    spans = []
    for label in "abc":
        start = float((runner.trace_dir / f"pooled-start-{label}.count").read_text().split()[1])
        end = float((runner.trace_dir / f"pooled-end-{label}.count").read_text().split()[1])
        spans.append((start, end))
    spans.sort()
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))


def test_an_unknown_pool_is_refused_before_anything_runs(runner: Runner) -> None:
    with pytest.raises(PipelineDefinitionError) as raised:
        runner.start(flows.pooled_flow, trace_dir=str(runner.trace_dir))
    assert raised.value.code == "pipeline/unknown_pool"


def test_runs_are_measured_and_traced(runner: Runner) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = RunEngine(
        runner.sessions,
        runner.engine.pool,
        runner.store,
        runner.engine.settings,
        tracer_provider=provider,
    )
    spec = flows.flaky_flow.spec("tests/pipelines/flows.py:flaky_flow")
    params = flows.flaky_flow.validate_params({"trace_dir": str(runner.trace_dir), "failures": 1})
    run_id = engine.create_run(runner.project_id, spec, params)
    assert engine.execute(run_id) is RunState.SUCCEEDED

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            generate_latest(engine.metrics.registry).decode()
        )
        for s in family.samples
    }
    key = (
        "modelyard_task_runs_total",
        (("pipeline", "flaky_flow"), ("state", "succeeded"), ("task", "flaky")),
    )
    assert samples[key] == 1
    durations = (
        "modelyard_task_duration_seconds_count",
        (("pipeline", "flaky_flow"), ("task", "flaky")),
    )
    assert samples[durations] == 2  # the failed attempt and the successful one
    spans = exporter.get_finished_spans()
    run_span = next(s for s in spans if s.name == "pipeline run")
    attempts = [s for s in spans if s.name == "task flaky"]
    assert len(attempts) == 2
    assert all(
        a.parent is not None and a.parent.span_id == run_span.context.span_id for a in attempts
    )
    assert [a.attributes["modelyard.outcome"] for a in attempts] == ["raised", "succeeded"]
