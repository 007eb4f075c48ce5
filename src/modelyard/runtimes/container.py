"""The entrypoint of a job in a container (``modelyard task run``): the job arrives as
JSON in ``MODELYARD_TASK_JOB``, runs in this process as in a warm local worker, and its
outcome leaves as JSON in the container's termination message, which the runtime reads
from the pod's status (no log parsing, no side channel)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind

JOB_VARIABLE = "MODELYARD_TASK_JOB"
TERMINATION_LOG = Path("/dev/termination-log")
MESSAGE_LIMIT = 4096  # the kubelet keeps at most this much of a termination message


def job_to_json(job: Job) -> str:
    """What a container needs of ``job``; values and secrets travel separately (the
    environment holds the secrets, by reference to a Kubernetes Secret)."""
    return json.dumps(
        {
            "target": job.target,
            "kwargs": job.kwargs,
            "import_path": list(job.import_path),
        },
        sort_keys=True,
        default=str,
    )


def job_from_json(text: str) -> Job:
    data = json.loads(text)
    return Job(
        target=str(data["target"]),
        kwargs=dict(data.get("kwargs", {})),
        import_path=tuple(data.get("import_path", ())),
    )


def outcome_message(outcome: Outcome) -> str:
    """The outcome as a termination message of at most 4 KiB: the traceback is cut
    from its start (its end names the error) before anything else is."""
    record: dict[str, Any] = {"kind": outcome.kind.value, "seconds": round(outcome.seconds, 3)}
    if outcome.ok:
        record["value"] = outcome.value
    else:
        record |= {
            "error_type": outcome.error_type,
            "error_message": (outcome.error_message or "")[:1024],
            "traceback": outcome.traceback or "",
        }
    text = json.dumps(record, default=str)
    if len(text.encode()) <= MESSAGE_LIMIT or outcome.ok:
        return text
    excess = len(text.encode()) - MESSAGE_LIMIT + 16
    record["traceback"] = "..." + record["traceback"][excess:]
    return json.dumps(record, default=str)


def outcome_from_message(message: str, exit_code: int | None) -> Outcome:
    """The outcome a container reported; a message that is not ours (the process died
    before writing it) is a crash with the container's exit code."""
    try:
        record = json.loads(message)
        kind = OutcomeKind(record["kind"])
    except (ValueError, KeyError, TypeError):
        return Outcome(
            kind=OutcomeKind.CRASHED,
            exit_code=exit_code,
            error_message=message.strip()[-1024:] or f"the container exited with {exit_code}",
        )
    return Outcome(
        kind=kind,
        value=record.get("value"),
        error_type=record.get("error_type"),
        error_message=record.get("error_message"),
        traceback=record.get("traceback"),
        exit_code=exit_code,
        seconds=float(record.get("seconds", 0.0)),
    )


def run_from_environment() -> int:
    """Run the job in ``MODELYARD_TASK_JOB``; returns the process's exit code (0:
    succeeded, 1: the user's code raised). The outcome goes to the termination message
    (``MODELYARD_TERMINATION_LOG`` moves it, for tests) and to stdout."""
    from modelyard.runtimes.local.worker import run_job

    termination_log = Path(os.environ.get("MODELYARD_TERMINATION_LOG", TERMINATION_LOG))
    job = job_from_json(os.environ[JOB_VARIABLE])
    outcome = run_job(job)
    message = outcome_message(outcome)
    with contextlib.suppress(OSError):  # not in a container: stdout only
        termination_log.write_text(message)
    print(message, flush=True)
    return 0 if outcome.ok else 1


if __name__ == "__main__":  # what pods run: `python -m modelyard.runtimes.container`
    sys.exit(run_from_environment())
