"""Who may call the control-plane functions (drift-check, retrain-trigger, promote).

Two credentials open them, either one suffices:

- a static bearer token from ``DRIFTLOOP_FUNCTION_TOKENS`` (what the local dispatcher and
  Alertmanager send), compared in constant time against every configured token;
- in a cluster, the OIDC token Knative Eventing attaches to each delivery (the
  ``authentication-oidc`` feature): a JWT whose signature verifies against the issuer's
  JWKS, whose ``aud`` is this function's audience, whose ``iss`` is the issuer, and which
  has not expired.

With neither configured the functions stay open (the local default); with either, a
request without a valid credential is 401. A JWKS endpoint that cannot be read is 503
(delivery retries), never a pass.
"""

from __future__ import annotations

import fnmatch
import hmac
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftloop.errors import Unauthorized, Unavailable

if TYPE_CHECKING:
    from jwt import PyJWKClient

    from driftloop.settings import Settings

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
"""Asymmetric algorithms only: an HMAC or ``none`` token can never verify against a JWKS."""
JWKS_PATH = "/openid/v1/jwks"
"""Where Kubernetes (the issuer of Knative's OIDC tokens) serves its signing keys."""


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header, if any."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def client_headers(settings: Settings) -> dict[str, str]:
    """What driftloop's own callers of the control plane send (the CLI demo, the local
    dispatcher): the first of ``DRIFTLOOP_FUNCTION_TOKENS``, if any."""
    tokens = settings.function_token_list
    return {"authorization": f"Bearer {tokens[0]}"} if tokens else {}


class TokenSet:
    """Static bearer tokens. Every configured token is compared (in constant time) so the
    answer's timing tells nothing about which, or how much of one, matched."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [t.encode() for t in tokens if t]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def matches(self, token: str) -> bool:
        given = token.encode()
        found = False
        for t in self._tokens:
            found |= hmac.compare_digest(given, t)
        return found


class OidcVerifier:
    """Verifies the JWTs Knative Eventing delivers with (signature, audience, issuer, expiry).

    The issuer's keys are read from its JWKS endpoint and cached; a token signed with a key
    the cache does not know makes one refetch (key rotation), then fails.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str = "",
        leeway_s: float = 30.0,
        ca_file: Path | None = None,
        token_file: Path | None = None,
        subjects: Sequence[str] = (),
        cache_s: int = 300,
        timeout_s: float = 5.0,
    ) -> None:
        if not audience:
            raise ValueError("DRIFTLOOP_FUNCTION_OIDC_AUDIENCE is required with an OIDC issuer")
        self.issuer, self.audience, self.leeway_s = issuer, audience, leeway_s
        self.subjects = [p for p in subjects if p]
        self.jwks_url = jwks_url or issuer.rstrip("/") + JWKS_PATH
        self._client = _jwks_client(self.jwks_url, ca_file=ca_file, token_file=token_file,
                                    cache_s=cache_s, timeout_s=timeout_s)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; ``Unauthorized`` naming the reason, ``Unavailable`` when the
        keys cannot be read."""
        import jwt

        try:
            key = self._client.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as e:
            raise Unavailable(f"cannot read the OIDC signing keys at {self.jwks_url}") from e
        except jwt.PyJWKClientError as e:
            raise Unauthorized("invalid token: no signing key of the issuer matches") from e
        except jwt.InvalidTokenError as e:
            raise Unauthorized(f"invalid token: {_reason(e)}") from e
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=list(ALGORITHMS), audience=self.audience,
                issuer=self.issuer, leeway=self.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as e:
            raise Unauthorized(f"invalid token: {_reason(e)}") from e
        subject = str(claims.get("sub", ""))
        if self.subjects and not any(fnmatch.fnmatchcase(subject, p) for p in self.subjects):
            raise Unauthorized("invalid token: subject not allowed")
        return claims


def _reason(e: Exception) -> str:
    """A short reason without the token itself."""
    import jwt

    for cls, text in ((jwt.ExpiredSignatureError, "expired"),
                      (jwt.InvalidAudienceError, "wrong audience"),
                      (jwt.InvalidIssuerError, "wrong issuer"),
                      (jwt.ImmatureSignatureError, "not valid yet"),
                      (jwt.InvalidSignatureError, "signature does not verify"),
                      (jwt.MissingRequiredClaimError, "a required claim is missing"),
                      (jwt.InvalidAlgorithmError, "algorithm not allowed")):
        if isinstance(e, cls):
            return text
    return "malformed"


def _jwks_client(url: str, *, ca_file: Path | None, token_file: Path | None, cache_s: int,
                 timeout_s: float) -> PyJWKClient:
    """A PyJWKClient that sends the (rotating) service-account token on each key fetch."""
    import jwt

    class _Client(jwt.PyJWKClient):
        def fetch_data(self) -> Any:
            if token_file is not None:
                self.headers = {**self.headers,
                                "Authorization": f"Bearer {token_file.read_text().strip()}"}
            return super().fetch_data()

    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    return _Client(url, cache_jwk_set=True, lifespan=cache_s, timeout=int(max(timeout_s, 1)),
                   ssl_context=context)


class FunctionAuth:
    """The credential check of one control-plane function (``check`` or 401)."""

    def __init__(self, tokens: TokenSet, oidc: OidcVerifier | None = None) -> None:
        self.tokens, self.oidc = tokens, oidc

    @classmethod
    def from_settings(cls, settings: Settings) -> FunctionAuth | None:
        """None when neither tokens nor an OIDC issuer are configured (open)."""
        tokens = TokenSet(settings.function_token_list)
        oidc = None
        if settings.function_oidc_issuer:
            oidc = OidcVerifier(
                issuer=settings.function_oidc_issuer,
                audience=settings.function_oidc_audience,
                jwks_url=settings.function_oidc_jwks_url,
                leeway_s=settings.function_oidc_leeway_s,
                ca_file=settings.function_oidc_ca_file,
                token_file=settings.function_oidc_token_file,
                subjects=settings.function_oidc_subjects,
            )
        if not tokens and oidc is None:
            return None
        return cls(tokens, oidc)

    def check(self, headers: Mapping[str, str]) -> None:
        """Pass, or raise ``Unauthorized`` (``Unavailable`` if the issuer's keys are out of
        reach)."""
        token = bearer_token(headers)
        if token is None:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        if self.tokens.matches(token):
            return
        if self.oidc is not None and token.count(".") == 2:
            self.oidc.verify(token)
            return
        raise Unauthorized("invalid token")
