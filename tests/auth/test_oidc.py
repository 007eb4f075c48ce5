"""OIDCVerifier against a real (test) identity provider, and grants_from_groups."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from modelyard.auth.oidc import OIDCVerifier, grants_from_groups
from modelyard.auth.roles import Role
from modelyard.config import OIDCRoleMapping, Settings
from modelyard.errors import AuthenticationError, ServiceUnavailableError
from tests.auth.idp import (
    AUDIENCE,
    DISCOVERY_PATH,
    JWKS_PATH,
    REFUSED,
    IdentityProvider,
    TokenMaker,
    closed_port_url,
    rsa_key,
    with_header,
)
from tests.auth.idp import idp as idp

GROUP_PATTERN = r"^modelyard:(?P<project>[a-z0-9-]+):(?P<role>viewer|editor|admin)$"


def oidc_settings(settings: Settings, provider: IdentityProvider, **update: Any) -> Settings:
    values: dict[str, Any] = {
        "oidc_issuer": provider.issuer,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": provider.jwks_url,
    }
    values.update(update)
    return settings.model_copy(update=values)


@pytest.fixture
def verifier(settings: Settings, idp: IdentityProvider) -> OIDCVerifier:
    return OIDCVerifier(oidc_settings(settings, idp))


# -- OIDCVerifier: the identity of a valid token --------------------------------------------


def test_a_valid_token_yields_its_identity(verifier: OIDCVerifier, idp: IdentityProvider) -> None:
    identity = verifier.verify(idp.token("sub-1", groups=["g1", "g2"]))

    assert identity.issuer == idp.issuer
    assert identity.subject == "sub-1"
    assert identity.username == "alice"
    assert identity.email == "alice@example.com"
    assert identity.groups == ("g1", "g2")
    assert identity.qualified_subject == f"{idp.issuer}|sub-1"


def test_the_username_falls_back_to_the_subject(
    verifier: OIDCVerifier, idp: IdentityProvider
) -> None:
    identity = verifier.verify(idp.token("sub-1", username=None, email=None))

    assert identity.username == "sub-1"
    assert identity.email is None


def test_the_username_and_groups_claims_are_configurable(
    settings: Settings, idp: IdentityProvider
) -> None:
    verifier = OIDCVerifier(
        oidc_settings(settings, idp, oidc_username_claim="email", oidc_groups_claim="roles")
    )

    identity = verifier.verify(idp.token(groups=["ignored"], roles=["r1"]))

    assert identity.username == "alice@example.com"
    assert identity.groups == ("r1",)


@pytest.mark.parametrize(
    ("claim", "groups"),
    [
        ("solo", ("solo",)),
        ({"not": "a list"}, ()),
        (42, ()),
        (None, ()),
    ],
)
def test_a_groups_claim_that_is_not_a_list_is_tolerated(
    verifier: OIDCVerifier, idp: IdentityProvider, claim: object, groups: tuple[str, ...]
) -> None:
    assert verifier.verify(idp.token(groups=claim)).groups == groups


def test_a_token_without_a_groups_claim_has_no_groups(
    verifier: OIDCVerifier, idp: IdentityProvider
) -> None:
    assert verifier.verify(idp.token(drop=("groups",))).groups == ()


def test_an_audience_list_containing_ours_is_accepted(
    verifier: OIDCVerifier, idp: IdentityProvider
) -> None:
    assert verifier.verify(idp.token(audience=["account", AUDIENCE])).subject == "sub-alice"


def test_expiry_allows_the_configured_leeway(verifier: OIDCVerifier, idp: IdentityProvider) -> None:
    assert verifier.verify(idp.token(expires_in=-10)).subject == "sub-alice"
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(idp.token(expires_in=-60))
    assert caught.value.code == "auth/token_expired"


# -- OIDCVerifier: keys, discovery and caching ----------------------------------------------


def test_keys_are_fetched_once_and_cached(verifier: OIDCVerifier, idp: IdentityProvider) -> None:
    for _ in range(3):
        verifier.verify(idp.token())

    assert idp.hits[JWKS_PATH] == 1
    assert idp.hits[DISCOVERY_PATH] == 0


def test_the_jwks_url_is_discovered_from_the_issuer(
    settings: Settings, idp: IdentityProvider
) -> None:
    verifier = OIDCVerifier(oidc_settings(settings, idp, oidc_jwks_url=None))

    verifier.verify(idp.token())
    verifier.verify(idp.token())

    assert idp.hits[DISCOVERY_PATH] == 1
    assert idp.hits[JWKS_PATH] == 1


def test_an_unreachable_discovery_document_means_unavailable(
    settings: Settings, idp: IdentityProvider
) -> None:
    verifier = OIDCVerifier(
        oidc_settings(settings, idp, oidc_issuer=closed_port_url("/realm"), oidc_jwks_url=None)
    )

    with pytest.raises(ServiceUnavailableError) as caught:
        verifier.verify(idp.token())
    assert caught.value.code == "auth/oidc_unavailable"


def test_a_discovery_document_without_jwks_uri_means_unavailable(
    settings: Settings, idp: IdentityProvider
) -> None:
    idp.discovery_override = {"issuer": idp.issuer}
    verifier = OIDCVerifier(oidc_settings(settings, idp, oidc_jwks_url=None))

    with pytest.raises(ServiceUnavailableError) as caught:
        verifier.verify(idp.token())
    assert caught.value.code == "auth/oidc_unavailable"
    assert idp.hits[DISCOVERY_PATH] == 1


def test_an_unreachable_jwks_means_unavailable(settings: Settings, idp: IdentityProvider) -> None:
    verifier = OIDCVerifier(oidc_settings(settings, idp, oidc_jwks_url=closed_port_url("/jwks")))

    with pytest.raises(ServiceUnavailableError) as caught:
        verifier.verify(idp.token())
    assert caught.value.code == "auth/oidc_unavailable"


def test_a_missing_jwks_document_means_unavailable(
    settings: Settings, idp: IdentityProvider
) -> None:
    verifier = OIDCVerifier(oidc_settings(settings, idp, oidc_jwks_url=idp.base_url + "/nope"))

    with pytest.raises(ServiceUnavailableError) as caught:
        verifier.verify(idp.token())
    assert caught.value.code == "auth/oidc_unavailable"


@pytest.mark.parametrize("body", [b'{"keys": []}', b"<html>maintenance</html>"])
def test_an_unusable_jwks_means_unavailable(
    verifier: OIDCVerifier, idp: IdentityProvider, body: bytes
) -> None:
    idp.jwks_body_override = body

    with pytest.raises(ServiceUnavailableError) as caught:
        verifier.verify(idp.token())
    assert caught.value.code == "auth/oidc_unavailable"


@pytest.mark.parametrize("missing", ["oidc_issuer", "oidc_audience"])
def test_the_verifier_needs_issuer_and_audience(
    settings: Settings, idp: IdentityProvider, missing: str
) -> None:
    with pytest.raises(ValueError, match="oidc_issuer and oidc_audience"):
        OIDCVerifier(oidc_settings(settings, idp, **{missing: None}))


# -- OIDCVerifier: every way a token is refused ---------------------------------------------


@pytest.mark.parametrize(("make", "code"), REFUSED)
def test_bad_tokens_are_refused_with_a_precise_code(
    verifier: OIDCVerifier, idp: IdentityProvider, make: TokenMaker, code: str
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(make(idp))
    assert caught.value.code == code


def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    verifier: OIDCVerifier, idp: IdentityProvider
) -> None:
    token = with_header(idp.token(), {"alg": "ES256", "typ": "JWT", "kid": idp.kid})

    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(token)
    assert caught.value.code == "auth/invalid_token"


def test_a_key_withdrawn_from_the_jwks_is_no_longer_trusted(
    verifier: OIDCVerifier, idp: IdentityProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    withdrawn = idp.keys[idp.kid]
    verifier.verify(idp.token())
    del idp.keys[idp.kid]
    idp.kid = "key-2"
    idp.keys[idp.kid] = rsa_key("rotated")
    # Let the cached JWK set expire (lifespan 300 s) without waiting for it.
    client = verifier._client()
    assert client.jwk_set_cache is not None
    monkeypatch.setattr(client.jwk_set_cache, "is_expired", lambda: True)
    assert verifier.verify(idp.token()).subject == "sub-alice"

    forged = jwt.encode(idp.claims(), withdrawn, algorithm="RS256", headers={"kid": "key-1"})
    with pytest.raises(AuthenticationError):
        verifier.verify(forged)


# -- grants_from_groups ---------------------------------------------------------------------


def grants_settings(
    settings: Settings, mappings: list[OIDCRoleMapping] | None = None, pattern: str | None = None
) -> Settings:
    return settings.model_copy(
        update={"oidc_role_mappings": mappings or [], "oidc_group_pattern": pattern}
    )


def test_no_configuration_grants_nothing(settings: Settings) -> None:
    grants = grants_from_groups(("risk-editors", "modelyard:risk:admin"), settings)

    assert grants.superuser is False
    assert grants.project_roles == {}


def test_a_mapped_group_grants_its_project_role(settings: Settings) -> None:
    configured = grants_settings(
        settings, [OIDCRoleMapping(group="risk-editors", project="risk", role="editor")]
    )

    assert grants_from_groups(("risk-editors",), configured).project_roles == {"risk": Role.EDITOR}
    assert grants_from_groups(("Risk-Editors",), configured).project_roles == {}
    assert grants_from_groups((), configured).project_roles == {}


def test_a_superuser_mapping_grants_superuser_only(settings: Settings) -> None:
    configured = grants_settings(settings, [OIDCRoleMapping(group="ops", role="superuser")])

    assert grants_from_groups(("ops",), configured).superuser is True
    assert grants_from_groups(("ops",), configured).project_roles == {}
    assert grants_from_groups(("dev",), configured).superuser is False


def test_a_project_role_mapping_without_a_project_is_ignored(settings: Settings) -> None:
    configured = grants_settings(settings, [OIDCRoleMapping(group="g", role="admin")])

    grants = grants_from_groups(("g",), configured)

    assert grants.superuser is False
    assert grants.project_roles == {}


@pytest.mark.parametrize(
    "groups",
    [("v", "a", "e"), ("a", "e", "v"), ("e", "v", "a")],
)
def test_the_highest_role_wins_whatever_the_order(
    settings: Settings, groups: tuple[str, ...]
) -> None:
    configured = grants_settings(
        settings,
        [
            OIDCRoleMapping(group="v", project="risk", role="viewer"),
            OIDCRoleMapping(group="e", project="risk", role="editor"),
            OIDCRoleMapping(group="a", project="risk", role="admin"),
        ],
    )

    assert grants_from_groups(groups, configured).project_roles == {"risk": Role.ADMIN}


def test_one_group_can_map_to_several_projects(settings: Settings) -> None:
    configured = grants_settings(
        settings,
        [
            OIDCRoleMapping(group="ds", project="risk", role="editor"),
            OIDCRoleMapping(group="ds", project="fraud", role="viewer"),
        ],
    )

    assert grants_from_groups(("ds",), configured).project_roles == {
        "risk": Role.EDITOR,
        "fraud": Role.VIEWER,
    }


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("modelyard:risk:viewer", {"risk": Role.VIEWER}),
        ("modelyard:risk:editor", {"risk": Role.EDITOR}),
        ("modelyard:credit-scoring:admin", {"credit-scoring": Role.ADMIN}),
        ("modelyard:risk:owner", {}),
        ("modelyard:Risk:admin", {}),
        ("other:risk:admin", {}),
        ("modelyard:risk:admin:extra", {}),
    ],
)
def test_the_group_pattern_grants_roles(
    settings: Settings, group: str, expected: dict[str, Role]
) -> None:
    configured = grants_settings(settings, pattern=GROUP_PATTERN)

    assert grants_from_groups((group,), configured).project_roles == expected


def test_the_pattern_must_match_the_whole_group(settings: Settings) -> None:
    configured = grants_settings(settings, pattern=r"(?P<project>[a-z]+)-(?P<role>[a-z]+)")

    assert grants_from_groups(("risk-editor",), configured).project_roles == {"risk": Role.EDITOR}
    assert grants_from_groups(("x/risk-editor",), configured).project_roles == {}


def test_the_pattern_cannot_grant_superuser_or_unknown_roles(settings: Settings) -> None:
    configured = grants_settings(settings, pattern=r"^my:(?P<project>[a-z]+):(?P<role>\w+)$")

    grants = grants_from_groups(("my:risk:superuser", "my:risk:owner", "my:ml:editor"), configured)

    assert grants.superuser is False
    assert grants.project_roles == {"ml": Role.EDITOR}


def test_a_pattern_without_the_named_groups_grants_nothing(settings: Settings) -> None:
    configured = grants_settings(settings, pattern=r"^team-(?P<project>[a-z]+)$")

    assert grants_from_groups(("team-risk",), configured).project_roles == {}


def test_mappings_and_the_pattern_combine(settings: Settings) -> None:
    configured = grants_settings(
        settings,
        [
            OIDCRoleMapping(group="risk-viewers", project="risk", role="viewer"),
            OIDCRoleMapping(group="ops", role="superuser"),
        ],
        pattern=GROUP_PATTERN,
    )

    grants = grants_from_groups(
        ("risk-viewers", "modelyard:risk:admin", "modelyard:fraud:viewer", "ops"), configured
    )

    assert grants.superuser is True
    assert grants.project_roles == {"risk": Role.ADMIN, "fraud": Role.VIEWER}
