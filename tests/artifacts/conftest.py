"""Fixtures: one artifact store per test, on a local folder and on S3 (moto, on loopback)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.server import ThreadedMotoServer

from modelyard.artifacts import ArtifactStore

BUCKET = "modelyard-artifacts"
CREDENTIALS = {"key": "testing", "secret": "testing"}
REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto) on a free loopback port, with one bucket."""
    with pytest.MonkeyPatch.context() as patch:
        # A developer's AWS profile or endpoint must not redirect the tests.
        for name in list(os.environ):
            if name.startswith("AWS_"):
                patch.delenv(name)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=CREDENTIALS["key"],
            aws_secret_access_key=CREDENTIALS["secret"],
            region_name=REGION,
        )
        client.create_bucket(Bucket=BUCKET)
        yield endpoint
        server.stop()


def s3_options(endpoint: str) -> dict[str, Any]:
    """storage_options reaching the moto server."""
    return {"endpoint_url": endpoint, **CREDENTIALS, "client_kwargs": {"region_name": REGION}}


@pytest.fixture(
    params=[
        pytest.param("local", id="local"),
        pytest.param("s3", id="s3", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """An empty store of this test's own: a local folder, or a fresh prefix in the bucket."""
    if request.param == "local":
        return ArtifactStore((tmp_path / "artifacts").as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    return ArtifactStore(f"s3://{BUCKET}/{uuid.uuid4().hex}", storage_options=s3_options(endpoint))


@pytest.fixture
def local_store(tmp_path: Path) -> ArtifactStore:
    """A store on a local folder, for behaviour only a local filesystem has."""
    return ArtifactStore((tmp_path / "artifacts").as_uri())
