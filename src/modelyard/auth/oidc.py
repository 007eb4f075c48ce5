"""OpenID Connect single sign-on: validate providers' JWT access tokens against their JWKS.

Works with any provider that publishes a JWKS (Keycloak, Dex, Entra ID, Okta, ...).
The issuer, audience, expiry and signature are all checked; the groups claim is
mapped to project roles by configuration (``oidc_role_mappings`` and/or
``oidc_group_pattern``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from modelyard.auth.roles import Role
from modelyard.config import Settings
from modelyard.errors import AuthenticationError, ServiceUnavailableError

_DISCOVERY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class OIDCIdentity:
    issuer: str
    subject: str
    username: str
    email: str | None
    groups: tuple[str, ...]

    @property
    def qualified_subject(self) -> str:
        """Unique across providers: a subject is only unique within its issuer."""
        return f"{self.issuer}|{self.subject}"


@dataclass(frozen=True)
class GroupGrants:
    superuser: bool
    project_roles: dict[str, Role]


class OIDCVerifier:
    """Validates bearer JWTs from one issuer; keys are fetched lazily and cached."""

    def __init__(self, settings: Settings) -> None:
        if settings.oidc_issuer is None or settings.oidc_audience is None:
            raise ValueError("OIDC needs both oidc_issuer and oidc_audience")
        self._settings = settings
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._jwks_client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def _client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks_client is None:
                url = self._settings.oidc_jwks_url or self._discover_jwks_url()
                # Cache the whole key set for a while, not single keys forever, so a key
                # the provider withdraws stops being trusted within the lifespan.
                self._jwks_client = jwt.PyJWKClient(url, cache_keys=False, lifespan=300, timeout=5)
            return self._jwks_client

    def _discover_jwks_url(self) -> str:
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = httpx.get(url, timeout=_DISCOVERY_TIMEOUT_S)
            response.raise_for_status()
            document = response.json()
            issuer, jwks_uri = document["issuer"], document["jwks_uri"]
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise ServiceUnavailableError(
                f"the OIDC provider's discovery document could not be read from {url}",
                code="auth/oidc_unavailable",
            ) from exc
        if str(issuer).rstrip("/") != self._issuer.rstrip("/"):
            raise ServiceUnavailableError(
                f"the discovery document at {url} names another issuer ({issuer!r})",
                code="auth/oidc_misconfigured",
            )
        return str(jwks_uri)

    def verify(self, token: str) -> OIDCIdentity:
        """Return the identity a valid token carries.

        Raises:
            AuthenticationError: the token is malformed, expired, for another audience or
                issuer, or not signed by one of the provider's keys.
            ServiceUnavailableError: the provider's keys cannot be fetched.
        """
        try:
            signing_key = self._client().get_signing_key_from_jwt(token)
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError, ValueError) as exc:
            # Unreachable, empty or unreadable key set: the provider's problem, not the caller's.
            raise ServiceUnavailableError(
                "the OIDC provider's signing keys could not be fetched",
                code="auth/oidc_unavailable",
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError(
                "the token is not signed by a key of the configured OIDC provider",
                code="auth/invalid_token",
            ) from exc
        claims = self._decode(token, signing_key)
        return self._identity(claims)

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        # Passing the PyJWK (not its raw key) makes PyJWT refuse a token whose
        # algorithm does not fit the key, instead of failing with a TypeError.
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self._settings.oidc_algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._settings.oidc_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("the token has expired", code="auth/token_expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthenticationError(
                "the token was issued for another audience", code="auth/invalid_audience"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthenticationError(
                "the token was issued by another provider", code="auth/invalid_issuer"
            ) from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthenticationError(
                "the token's signature is not valid", code="auth/invalid_signature"
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError(
                f"the token is not valid: {exc}", code="auth/invalid_token"
            ) from exc
        return claims

    def _identity(self, claims: dict[str, Any]) -> OIDCIdentity:
        username = claims.get(self._settings.oidc_username_claim) or claims.get("sub")
        groups_claim = claims.get(self._settings.oidc_groups_claim, [])
        if isinstance(groups_claim, str):
            groups_claim = [groups_claim]
        if not isinstance(groups_claim, list):
            groups_claim = []
        email = claims.get("email")
        return OIDCIdentity(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            username=str(username),
            email=str(email) if email else None,
            groups=tuple(str(g) for g in groups_claim),
        )


def grants_from_groups(groups: tuple[str, ...], settings: Settings) -> GroupGrants:
    """The superuser flag and project roles that the configured mappings give ``groups``."""
    superuser = False
    roles: dict[str, Role] = {}

    def grant(project: str, role: Role) -> None:
        roles[project] = max(roles.get(project, role), role)

    pattern = re.compile(settings.oidc_group_pattern) if settings.oidc_group_pattern else None
    for group in groups:
        for mapping in settings.oidc_role_mappings:
            if mapping.group != group:
                continue
            if mapping.role == "superuser":
                superuser = True
            elif mapping.project is not None:
                grant(mapping.project, Role.parse(mapping.role))
        if pattern is not None and (match := pattern.fullmatch(group)):
            try:
                grant(match.group("project"), Role.parse(match.group("role")))
            except (IndexError, ValueError):
                continue
    return GroupGrants(superuser=superuser, project_roles=roles)
