"""No request body, however odd, makes a mutation endpoint fail with a 500."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MakeProject, Platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "name",
        "description",
        "labels",
        "user",
        "role",
        "value",
        "expires_in_days",
        "email",
        "display_name",
        "is_superuser",
        "disabled",
        "variants",
        "model",
        "traffic",
        "weights",
        "strategy",
        "shadow",
        "revision",
    ]
)
bodies = json_values | st.dictionaries(field_names, json_values, max_size=5)

ENDPOINTS = [
    ("POST", "/api/v1/projects"),
    ("PATCH", "/api/v1/projects/fuzz"),
    ("POST", "/api/v1/projects/fuzz/members"),
    ("PATCH", "/api/v1/projects/fuzz/members/admin"),
    ("PUT", "/api/v1/projects/fuzz/secrets/KEY"),
    ("POST", "/api/v1/users"),
    ("PATCH", "/api/v1/users/admin"),
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/projects/fuzz/deployments"),
    ("PATCH", "/api/v1/projects/fuzz/deployments/fare"),
    ("PUT", "/api/v1/projects/fuzz/deployments/fare/traffic"),
    ("POST", "/api/v1/projects/fuzz/deployments/fare/rollback"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_odd_bodies_get_a_client_error_or_success_never_a_500(
    platform: Platform,
    make_project: MakeProject,
    tmp_path_factory: pytest.TempPathFactory,
    method: str,
    path: str,
    body: Any,
) -> None:
    with platform.admin() as admin:
        if admin.get("/api/v1/projects/fuzz").status_code == 404:
            make_project("fuzz")
        fare = "/api/v1/projects/fuzz/deployments/fare"
        if path.startswith(fare) and admin.get(fare).status_code == 404:
            # A deployment to change (no controller runs here: nothing starts).
            model = tmp_path_factory.mktemp("model")
            (model / "MLmodel").write_text("flavors: {}\n")
            created = admin.post(
                "/api/v1/projects/fuzz/deployments",
                json={"name": "fare", "variants": [{"name": "primary", "model": str(model)}]},
            )
            assert created.status_code == 201, created.text
        response = admin.request(method, path, json=body)
    assert response.status_code < 500, (method, path, body, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"}
