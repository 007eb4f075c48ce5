"""Several models per server, loaded and unloaded at run time through V2's model
repository extension (with the real tritonclient) within a memory budget: least
recently used models make room, a model answering a request is never unloaded, a load
that cannot fit is refused in the error shape, and an unloaded model comes back on its
next request when it fits."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from tritonclient.utils import InferenceServerException

from modelyard.monitoring.metrics import ServingMetrics
from modelyard.serving import repository as serving_repository
from modelyard.serving.app import ModelServer
from modelyard.serving.models import (
    Batching,
    LoadOptions,
    fetch_model,
)
from modelyard.serving.repository import (
    MemoryEstimate,
    ModelRepository,
)
from modelyard.training.registry import own_types
from tests.serving.conftest import StartServer
from tests.serving.repository_models import Doubler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three iris classifiers (a, b, c), two slow doublers, one slow to load and one
    that holds 64 MiB once loaded."""
    folder = tmp_path_factory.mktemp("repository")
    data = load_iris(as_frame=True)
    frame = data.frame.drop(columns="target")
    for name, strength in (("a", 0.1), ("b", 1.0), ("c", 10.0)):
        model = LogisticRegression(C=strength, max_iter=500).fit(frame, data.target)
        mlflow.sklearn.save_model(
            model,
            folder / name,
            input_example=frame.head(2),
            signature=mlflow.models.infer_signature(frame, model.predict(frame)),
            pip_requirements=["scikit-learn"],
            skops_trusted_types=own_types(model),
        )
    example = pd.DataFrame({"x": [1.0]})
    signature = mlflow.models.infer_signature(example, example["x"].to_numpy())
    for name, config in (
        ("slow", {}),
        ("slow2", {}),
        ("sleepy", {"load_seconds": 3}),
        ("hungry", {"megabytes": 64}),
    ):
        with warnings.catch_warnings():  # no example for those: saving would load them
            warnings.filterwarnings("ignore", ".*An input example was not provided")
            mlflow.pyfunc.save_model(
                folder / name,
                python_model=Doubler(),
                signature=signature,
                input_example=None if config else example,
                pip_requirements=["mlflow"],
                model_config=config,
            )
    return {p.name: p for p in folder.iterdir()}


def _size(path: Path) -> int:
    return fetch_model(str(path)).size_bytes


Serve = Callable[..., tuple[str, ModelServer, triton.InferenceServerClient]]


@pytest.fixture
def serve(start_server: StartServer) -> Serve:
    """A server with no model loaded, a budget (estimated on disk: deterministic) and
    a tritonclient on it."""
    clients: list[triton.InferenceServerClient] = []

    def make(
        budget: int | None = None, estimate: MemoryEstimate = "disk"
    ) -> tuple[str, ModelServer, triton.InferenceServerClient]:
        metrics = ServingMetrics()
        repository = ModelRepository(
            LoadOptions(batching=Batching(max_batch_size=8)),
            memory_budget=budget,
            estimate=estimate,
            metrics=metrics,
        )
        server = ModelServer(metrics=metrics, repository=repository)
        url = start_server(server)
        client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)
        clients.append(client)
        return url, server, client

    return make


def _load(client: triton.InferenceServerClient, name: str, path: Path) -> None:
    client.load_model(name, config=json.dumps({"uri": str(path)}))


def _index(client: triton.InferenceServerClient) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in client.get_model_repository_index()}


def _iris(url: str, name: str) -> httpx.Response:
    rows = load_iris(as_frame=True).frame.drop(columns="target").head(3)
    body = {"dataframe_split": rows.to_dict(orient="split")}
    return httpx.post(f"{url}/invocations?model={name}", json=body, timeout=30)


def _double(url: str, name: str, x: float) -> httpx.Response:
    body = {"dataframe_records": [{"x": x}]}
    return httpx.post(f"{url}/invocations?model={name}", json=body, timeout=30)


class _InFlight:
    """A slow request (``x`` seconds in the model) in a thread, in flight once started."""

    def __init__(self, url: str, server: ModelServer, name: str, seconds: float) -> None:
        self.answers: list[httpx.Response] = []
        self._thread = threading.Thread(
            target=lambda: self.answers.append(_double(url, name, seconds))
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while server.repository.entries[name].in_flight == 0:
            assert time.monotonic() < deadline, "the slow request never arrived"
            time.sleep(0.01)

    def answer(self) -> httpx.Response:
        self._thread.join(timeout=30)
        (answer,) = self.answers
        return answer


def test_load_unload_and_index_with_the_real_triton_client(
    serve: Serve, folders: dict[str, Path]
) -> None:
    url, _, client = serve()
    assert client.get_model_repository_index() == []
    _load(client, "a", folders["a"])
    httpx.post(  # the body Triton documents, as a plain HTTP client sends it
        f"{url}/v2/repository/models/double/load",
        json={"parameters": {"uri": str(folders["slow"])}},
    ).raise_for_status()
    assert client.is_model_ready("a")
    assert client.is_server_ready()
    assert _iris(url, "a").status_code == 200
    assert _double(url, "double", 0.5).json() == {"predictions": [1.0]}
    index = _index(client)
    assert {name: (e["state"], e["version"]) for name, e in index.items()} == {
        "a": ("READY", "1"),
        "double": ("READY", "1"),
    }

    client.unload_model("a")
    index = _index(client)
    assert (index["a"]["state"], index["a"]["reason"]) == ("UNAVAILABLE", "unloaded")
    assert not client.is_model_ready("a")
    assert client.is_server_ready()  # every *loaded* model is ready
    ready_only = httpx.post(f"{url}/v2/repository/index", json={"ready": True}).json()
    assert [e["name"] for e in ready_only] == ["double"]
    refused = _iris(url, "a")  # unloaded on purpose: it stays unloaded
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model/unavailable"
    assert "/v2/repository/models/a/load" in refused.json()["error"]["message"]
    assert httpx.get(f"{url}/v2/models/a").status_code == 503

    client.load_model("a")  # no URI: loaded again from the one it came from
    assert client.is_model_ready("a")
    assert _iris(url, "a").status_code == 200


def test_loading_a_known_name_from_another_uri_replaces_the_model(
    serve: Serve, folders: dict[str, Path]
) -> None:
    url, _, client = serve()
    _load(client, "m", folders["slow"])
    assert _double(url, "m", 0.5).json() == {"predictions": [1.0]}
    _load(client, "m", folders["b"])
    assert _iris(url, "m").json()["predictions"] == [0, 0, 0]
    client.load_model("m")  # again: the last URI, not the first
    assert client.get_model_metadata("m")["platform"] == "sklearn"


def test_unknown_models_are_404_and_bad_uris_400(serve: Serve, folders: dict[str, Path]) -> None:
    url, _, client = serve()
    _load(client, "a", folders["a"])
    with httpx.Client(base_url=url) as http:
        for method, path in (
            ("POST", "/v2/repository/models/nothing/load"),
            ("POST", "/v2/repository/models/nothing/unload"),
            ("POST", "/v2/models/nothing/infer"),
            ("GET", "/v2/models/nothing"),
            ("GET", "/v2/models/nothing/ready"),
            ("GET", "/v2/models/a/versions/7/ready"),
        ):
            answer = http.request(method, path, content=b"{}")
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["error"]["code"] == "model/not_served"
        answer = http.post(
            "/v2/repository/models/x/load", json={"parameters": {"uri": "/no/such/model"}}
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "model/not_found"
        assert http.post("/v2/repository/models/x/load", content=b"[").status_code == 400
    with pytest.raises(InferenceServerException) as refused:
        client.load_model("nothing")
    assert refused.value.status() == "404"
    index = _index(client)
    assert index["x"]["state"] == "UNAVAILABLE"  # a failed load shows, with its reason
    assert "/no/such/model" in index["x"]["reason"]
    assert client.is_server_ready()  # a model that never loaded does not count


def test_least_recently_used_models_make_room_and_come_back_on_request(
    serve: Serve, folders: dict[str, Path]
) -> None:
    sizes = [_size(folders[name]) for name in "abc"]
    url, _, client = serve(budget=2 * max(sizes) + min(sizes) // 2)  # two fit, not three
    _load(client, "a", folders["a"])
    _load(client, "b", folders["b"])
    assert _iris(url, "a").status_code == 200  # b is now the least recently used
    _load(client, "c", folders["c"])
    index = _index(client)
    assert [index[n]["state"] for n in "abc"] == ["READY", "UNAVAILABLE", "READY"]
    assert "make room for 'c'" in index["b"]["reason"]
    assert index["b"]["memory_bytes"] == 0

    assert _iris(url, "b").status_code == 200  # loaded again, a (idle longest) makes room
    index = _index(client)
    assert [index[n]["state"] for n in "abc"] == ["UNAVAILABLE", "READY", "READY"]
    assert sum(e["memory_bytes"] for e in index.values()) <= 2 * max(sizes) + min(sizes) // 2
    metrics = httpx.get(f"{url}/metrics").text
    assert 'modelyard_model_unloads_total{model="b",reason="evicted"} 1.0' in metrics
    assert 'modelyard_model_unloads_total{model="a",reason="evicted"} 1.0' in metrics
    assert 'modelyard_model_loads_total{model="b",outcome="loaded"} 2.0' in metrics


def test_a_model_answering_a_request_is_never_unloaded_to_make_room(
    serve: Serve, folders: dict[str, Path]
) -> None:
    slow, a, b = (_size(folders[n]) for n in ("slow", "a", "b"))
    url, server, client = serve(budget=slow + max(a, b) + min(a, b) // 2)  # slow and one
    _load(client, "slow", folders["slow"])
    _load(client, "a", folders["a"])
    busy = _InFlight(url, server, "slow", 2.5)  # slow's last request is the older one
    assert _iris(url, "a").status_code == 200
    _load(client, "b", folders["b"])  # room is needed: slow is busy, so a goes
    index = _index(client)
    assert index["slow"]["state"] == "READY"
    assert index["a"]["state"] == "UNAVAILABLE"
    assert index["b"]["state"] == "READY"
    answer = busy.answer()
    assert answer.status_code == 200
    assert answer.json() == {"predictions": [5.0]}


def test_a_load_that_cannot_fit_is_refused_in_the_error_shape(
    serve: Serve, folders: dict[str, Path]
) -> None:
    slow, a = _size(folders["slow"]), _size(folders["a"])
    budget = max(slow, a) + min(slow, a) // 2  # one model at a time
    url, server, client = serve(budget=budget)
    _load(client, "slow", folders["slow"])
    busy = _InFlight(url, server, "slow", 2.5)
    with pytest.raises(InferenceServerException) as refused:
        _load(client, "a", folders["a"])
    assert refused.value.status() == "507"
    answer = httpx.post(
        f"{url}/v2/repository/models/a/load", json={"parameters": {"uri": str(folders["a"])}}
    )
    assert answer.status_code == 507
    error = answer.json()["error"]
    assert error["code"] == "model/memory_budget"
    assert error["details"]["busy"] == ["slow"]
    assert error["details"]["budget_bytes"] == budget
    assert "memory budget" in error["message"]
    assert _index(client)["a"]["state"] == "UNAVAILABLE"
    assert busy.answer().json() == {"predictions": [5.0]}  # not disturbed

    _load(client, "a", folders["a"])  # slow is idle now: it makes room
    index = _index(client)
    assert (index["a"]["state"], index["slow"]["state"]) == ("READY", "UNAVAILABLE")


def test_a_model_larger_than_the_budget_once_loaded_is_refused(
    serve: Serve, folders: dict[str, Path]
) -> None:
    _, _, client = serve(budget=32 * 2**20, estimate="rss")
    with pytest.raises(InferenceServerException) as refused:
        _load(client, "hungry", folders["hungry"])  # small on disk, 64 MiB once loaded
    assert refused.value.status() == "507"
    entry = _index(client)["hungry"]
    assert (entry["state"], entry["memory_bytes"]) == ("UNAVAILABLE", 0)
    assert "32.0 MiB" in entry["reason"]
    assert client.is_server_ready()


def test_an_unloaded_model_that_cannot_fit_now_answers_503(
    serve: Serve, folders: dict[str, Path]
) -> None:
    slow, slow2 = _size(folders["slow"]), _size(folders["slow2"])
    url, server, client = serve(budget=max(slow, slow2) + min(slow, slow2) // 2)
    _load(client, "slow2", folders["slow2"])
    _load(client, "slow", folders["slow"])  # slow2 makes room
    busy = _InFlight(url, server, "slow", 2.5)
    refused = _double(url, "slow2", 0.5)  # would load again, but slow is busy
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "model/unavailable"
    assert error["details"]["cause"] == "model/memory_budget"
    assert busy.answer().status_code == 200
    assert _double(url, "slow2", 0.5).json() == {"predictions": [1.0]}  # now it fits


def test_other_models_answer_while_one_loads(serve: Serve, folders: dict[str, Path]) -> None:
    url, _, client = serve()
    _load(client, "a", folders["a"])

    def load_sleepy() -> None:  # a client of its own: tritonclient's are not thread-safe
        own = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)
        _load(own, "sleepy", folders["sleepy"])
        own.close()

    loading = threading.Thread(target=load_sleepy)
    loading.start()
    deadline = time.monotonic() + 10
    while _index(client).get("sleepy", {}).get("state") != "LOADING":
        assert time.monotonic() < deadline, "the load never started"
        time.sleep(0.02)
    assert not client.is_model_ready("sleepy")
    started = time.monotonic()
    assert _iris(url, "a").status_code == 200
    assert time.monotonic() - started < 1.5  # not stuck behind a 3-second load
    assert _index(client)["sleepy"]["state"] == "LOADING"  # still loading meanwhile
    waiting = _double(url, "sleepy", 0.5)  # a request for it waits for the load
    assert waiting.json() == {"predictions": [1.0]}
    loading.join(timeout=30)
    assert client.is_model_ready("sleepy")


def test_memory_is_the_resident_set_growth_of_the_load(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def load(estimate: MemoryEstimate) -> int:
        repository = ModelRepository(estimate=estimate)
        model = await repository.load("hungry", str(folders["hungry"]))
        await repository.close()
        return model.memory_bytes

    folder = _size(folders["hungry"])
    assert folder < 16 * 2**20
    assert asyncio.run(load("rss")) >= 60 * 2**20  # the 64 MiB it holds
    assert asyncio.run(load("disk")) == folder
    monkeypatch.setattr(serving_repository, "resident_bytes", lambda: None)  # no psutil
    assert asyncio.run(load("rss")) == folder
