"""Model-server fixtures: a fresh server app per test, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from modelyard.serving.app import ModelServer, create_server_app
from tests.conftest import LiveServer

StartServer = Callable[[ModelServer], str]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Serve a :class:`ModelServer` on a free loopback port; returns its URL. Every
    server started is stopped (its models unloaded) when the test ends."""
    started: list[LiveServer] = []

    def start(server: ModelServer) -> str:
        live = LiveServer(create_server_app(server))
        live.start()
        started.append(live)
        return live.url

    yield start
    for live in started:
        live.stop()
