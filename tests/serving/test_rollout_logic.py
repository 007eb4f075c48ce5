"""The decisions behind deployments, without processes: specs, the traffic split, the
autoscaler and canary analysis."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import pytest
from pydantic import ValidationError

from modelyard.serving.autoscaler import Autoscaler, Load, hpa_spec
from modelyard.serving.rollout import Action, VariantStats, judge
from modelyard.serving.router import RouteTable, same_predictions
from modelyard.specs.deployments import DeploymentSpec, RolloutPolicy, Scaling

# -- specs ------------------------------------------------------------------------------


def _spec(**traffic: object) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "name": "fare",
            "variants": [
                {"name": "primary", "model": "models:/m/1"},
                {"name": "canary", "model": "models:/m/2"},
            ],
            "traffic": traffic,
        }
    )


def test_a_spec_defaults_all_traffic_to_its_first_variant() -> None:
    spec = DeploymentSpec.model_validate(
        {"name": "fare", "variants": [{"name": "primary", "model": "models:/m/1"}]}
    )
    assert spec.routed.weights == {"primary": 100}
    assert spec.routed.primary == "primary"


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ({"weights": {"primary": 90, "canary": 20}}, "add up to 110"),
        ({"weights": {"primary": 100, "ghost": 0}}, "unknown variant(s) ['ghost']"),
        ({"weights": {"primary": 100}}, "['canary'] receive no traffic"),
        ({"weights": {"primary": 90, "canary": 10}, "shadow": "canary"}, "no live traffic"),
        ({"weights": {"primary": 101, "canary": -1}}, "between 0 and 100"),
    ],
)
def test_inconsistent_traffic_is_refused_naming_the_problem(
    traffic: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        _spec(**traffic)


def test_settings_out_of_bounds_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"min_replicas \(3\) is above max_replicas \(2\)"):
        Scaling(min_replicas=3, max_replicas=2)
    with pytest.raises(ValidationError, match="the last step sends 100%"):
        RolloutPolicy(steps=(10, 50))
    with pytest.raises(ValidationError, match="increasing"):
        RolloutPolicy(steps=(50, 10, 100))
    with pytest.raises(ValidationError, match="variant names repeat"):
        DeploymentSpec.model_validate(
            {
                "name": "fare",
                "variants": [
                    {"name": "primary", "model": "a"},
                    {"name": "primary", "model": "b"},
                ],
            }
        )
    with pytest.raises(ValidationError, match="name"):
        DeploymentSpec.model_validate(
            {"name": "Not A Name", "variants": [{"name": "primary", "model": "a"}]}
        )


# -- the split --------------------------------------------------------------------------


def _table(**extra: object) -> RouteTable:
    return RouteTable.from_json(
        {
            "deployment": "fare",
            "weights": {"primary": 90, "canary": 10},
            "variants": {
                "primary": {"replicas": ["http://a"]},
                "canary": {"replicas": ["http://b"]},
                "shadow": {"replicas": ["http://c"]},
            },
            **extra,
        }
    )


def test_weights_split_requests_in_proportion() -> None:
    table = _table()
    seen = Counter(table.choose({}) for _ in range(20_000))
    assert set(seen) == {"primary", "canary"}
    assert 0.08 < seen["canary"] / 20_000 < 0.12


def test_header_rules_and_the_variant_header_come_before_the_weights() -> None:
    table = _table(
        matches=[{"header": "X-Group", "value": "beta", "variant": "canary"}], shadow="shadow"
    )
    assert {table.choose({"x-group": "beta"}) for _ in range(200)} == {"canary"}
    assert {table.choose({"x-modelyard-variant": "canary"}) for _ in range(200)} == {"canary"}
    # The shadow is never chosen to answer, even when asked for by name.
    assert "shadow" not in {table.choose({"x-modelyard-variant": "shadow"}) for _ in range(500)}


def test_a_sticky_key_always_lands_on_the_same_variant_and_keys_follow_the_weights() -> None:
    table = _table(sticky_header="x-user")
    for user in ("ann", "bob", "cyd"):
        assert len({table.choose({"x-user": user}) for _ in range(50)}) == 1
    seen = Counter(table.choose({"x-user": f"user-{i}"}) for i in range(5_000))
    assert 0.07 < seen["canary"] / 5_000 < 0.13


def test_answers_are_compared_by_their_predictions() -> None:
    v2 = (
        b'{"model_name":"m","outputs":'
        b'[{"name":"y","datatype":"FP64","shape":[2],"data":[1.0,2.0]}]}'
    )
    v2_close = v2.replace(b"2.0]", b"2.0000000001]")
    v2_other = v2.replace(b"2.0]", b"2.5]")
    assert same_predictions(v2, v2_close)
    assert not same_predictions(v2, v2_other)
    assert same_predictions(b'{"predictions": [1, 0]}', b'{"predictions": [1, 0]}')
    assert not same_predictions(b'{"predictions": [1, 0]}', b'{"predictions": [1]}')
    assert not same_predictions(b'{"predictions": ["a"]}', b'{"predictions": ["b"]}')


# -- autoscaling ------------------------------------------------------------------------


def test_replicas_follow_inflight_requests_within_bounds() -> None:
    scaler = Autoscaler(Scaling(min_replicas=1, max_replicas=4, target_inflight=4))
    assert scaler.decide(0, 1, Load(inflight=12, requests=100)) == 3
    assert scaler.decide(1, 3, Load(inflight=100, requests=100)) == 4  # capped
    # within the 10% tolerance: no change
    assert scaler.decide(2, 3, Load(inflight=12.5, requests=100)) == 3


def test_scale_down_waits_out_its_window_and_takes_its_highest_recommendation() -> None:
    scaler = Autoscaler(
        Scaling(
            min_replicas=1,
            max_replicas=4,
            target_inflight=4,
            scale_down_window=timedelta(seconds=30),
        )
    )
    assert scaler.decide(0, 1, Load(inflight=16, requests=10)) == 4
    assert scaler.decide(10, 4, Load(inflight=0.5, requests=10)) == 4  # a lull keeps them
    assert scaler.decide(29, 4, Load(inflight=0.5, requests=10)) == 4
    assert scaler.decide(31, 4, Load(inflight=0.5, requests=10)) == 1  # the peak left the window


def test_scale_up_with_a_window_ignores_a_single_spike() -> None:
    scaler = Autoscaler(
        Scaling(max_replicas=4, target_inflight=4, scale_up_window=timedelta(seconds=10))
    )
    assert scaler.decide(0, 1, Load(inflight=2, requests=5)) == 1
    assert scaler.decide(1, 1, Load(inflight=16, requests=5)) == 1  # spike: lowest wins
    assert scaler.decide(12, 1, Load(inflight=16, requests=5)) == 4  # sustained


def test_an_idle_variant_scales_to_zero_and_wakes_on_a_waiting_request() -> None:
    scaler = Autoscaler(
        Scaling(min_replicas=0, max_replicas=2, idle_before_zero=timedelta(seconds=60))
    )
    assert scaler.decide(0, 1, Load(inflight=0.2, requests=3)) == 1
    assert scaler.decide(30, 1, Load(inflight=0)) == 1  # idle, but not long enough
    assert scaler.decide(61, 1, Load(inflight=0)) == 0
    assert scaler.decide(70, 0, Load(inflight=0, pending=1)) == 1
    assert Autoscaler(Scaling(min_replicas=2, max_replicas=3)).decide(0, 3, Load(0)) == 2


# -- canary analysis --------------------------------------------------------------------

POLICY = RolloutPolicy(window=timedelta(seconds=30), min_requests=50)


def test_a_healthy_canary_advances_only_after_its_window_with_enough_requests() -> None:
    base = VariantStats(requests=900, errors=1, p50_ms=3, p99_ms=10)
    good = VariantStats(requests=100, errors=0, p50_ms=3, p99_ms=12)
    assert judge(POLICY, base, good, 10).action is Action.HOLD
    assert judge(POLICY, base, good, 31).action is Action.ADVANCE
    few = VariantStats(requests=20, p99_ms=12)
    verdict = judge(POLICY, base, few, 31)
    assert verdict.action is Action.HOLD
    assert "20 of 50 requests" in verdict.reason


def test_a_canary_that_errs_or_slows_down_is_rolled_back_at_once() -> None:
    base = VariantStats(requests=900, errors=9, p99_ms=10)
    erring = VariantStats(requests=60, errors=6, p99_ms=10)
    verdict = judge(POLICY, base, erring, 5)
    assert verdict.action is Action.ROLL_BACK
    assert "error rate 10.0%" in verdict.reason
    slow = VariantStats(requests=60, errors=0, p99_ms=80)
    verdict = judge(POLICY, base, slow, 5)
    assert verdict.action is Action.ROLL_BACK
    assert "p99 80.0 ms is above 35.0 ms" in verdict.reason
    # Within the thresholds (1 point of errors, 1.5x + 20 ms): kept.
    close = VariantStats(requests=60, errors=1, p99_ms=34)
    assert judge(POLICY, base, close, 5).action is Action.HOLD


def test_the_scaling_rule_renders_as_an_hpa_on_the_same_metric() -> None:
    spec = hpa_spec(
        Scaling(
            min_replicas=0,
            max_replicas=5,
            target_inflight=2.5,
            scale_up_window=timedelta(seconds=15),
            scale_down_window=timedelta(seconds=120),
        ),
        "fare-primary",
    )
    assert spec["minReplicas"] == 1  # an HPA cannot scale to zero
    assert spec["maxReplicas"] == 5
    assert spec["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "modelyard_inflight_requests"},
                "target": {"type": "AverageValue", "averageValue": "2500m"},
            },
        }
    ]
    assert spec["behavior"] == {
        "scaleUp": {"stabilizationWindowSeconds": 15},
        "scaleDown": {"stabilizationWindowSeconds": 120},
    }
    assert (
        hpa_spec(Scaling(target_inflight=8), "x")["metrics"][0]["pods"]["target"]["averageValue"]
        == "8"
    )
