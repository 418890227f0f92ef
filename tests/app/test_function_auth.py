"""The control-plane functions (drift-check, retrain-trigger, promote) refuse callers
without a credential: a static bearer token, or Knative Eventing's OIDC token verified
against a JWKS served on loopback. Through functions-framework's app, in process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from driftloop.auth import FunctionAuth, bearer_token
from driftloop.errors import Unauthorized, Unavailable
from driftloop.http import Request
from driftloop.monitoring.check import DriftCheckService
from driftloop.promotion.service import PromotionService
from driftloop.retrain.trigger import RetrainTrigger
from driftloop.settings import Settings
from tests.fixtures.loop import function_client

FUNCTIONS = [
    ("drift-check", "drift_check", DriftCheckService),
    ("retrain-trigger", "retrain_trigger", RetrainTrigger),
    ("promote", "promote", PromotionService),
]
BODY = b'{"not": "an event"}'
HEADERS = {"content-type": "application/json"}


def serve(name: str, target: str, cls: Any, settings: Settings) -> tuple[Any, Any]:
    service = cls(settings)
    return function_client(name, target, service), service


def own_answer(service: Any) -> tuple[int, bytes]:
    """What the service answers to BODY when nothing stands in front of it."""
    r = service.handle(Request.post(HEADERS, BODY))
    return r.status, r.body


@pytest.mark.parametrize(("name", "target", "cls"), FUNCTIONS)
def test_tokens_required_when_configured(tmp_path, name, target, cls):
    settings = Settings(state_dir=tmp_path, function_tokens="first-tok, second-tok")
    client, service = serve(name, target, cls, settings)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Bearer "},
                    {"authorization": "Basic first-tok"}, {"authorization": "first-tok"},
                    {"authorization": "Bearer first-tok-and-more"}):
        r = client.post("/", headers={**HEADERS, **headers}, content=BODY)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "unauthorized"
        assert "first-tok" not in r.text
    assert client.get("/healthz").status_code == 200
    assert client.get("/anything").status_code == 401
    for token in ("first-tok", "second-tok"):
        r = client.post("/", headers={**HEADERS, "Authorization": f"bearer {token}"},
                        content=BODY)
        assert (r.status_code, r.content) == own_answer(service)
        assert r.status_code != 401


@pytest.mark.parametrize(("name", "target", "cls"), FUNCTIONS)
def test_open_without_tokens_or_issuer(tmp_path, name, target, cls):
    client, service = serve(name, target, cls, Settings(state_dir=tmp_path))
    r = client.post("/", headers=HEADERS, content=BODY)
    assert (r.status_code, r.content) == own_answer(service)


def test_bearer_token_parsing():
    assert bearer_token({"Authorization": "Bearer abc"}) == "abc"
    assert bearer_token({"authorization": "bearer  abc "}) == "abc"
    assert bearer_token({"authorization": "Basic abc"}) is None
    assert bearer_token({"authorization": "Bearer"}) is None
    assert bearer_token({}) is None


# --------------------------------------------------------------------------- OIDC

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "driftloop/drift-check"
SA_TOKEN = "sa-token-for-jwks"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Jwks:
    """A JWKS endpoint on loopback that, like the API server, wants a bearer token."""

    def __init__(self, key: rsa.RSAPrivateKey, kid: str) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.body = json.dumps({"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]})
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("authorization") != f"Bearer {SA_TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                outer.fetches += 1
                data = outer.body.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/openid/v1/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture
def jwks(issuer_key) -> Iterator[Jwks]:
    j = Jwks(issuer_key, kid="k1")
    yield j
    j.close()


@pytest.fixture
def oidc_settings(tmp_path, jwks) -> Settings:
    token_file = tmp_path / "sa-token"
    token_file.write_text(SA_TOKEN + "\n")
    return Settings(state_dir=tmp_path, function_oidc_issuer=ISSUER,
                    function_oidc_jwks_url=jwks.url, function_oidc_audience=AUDIENCE,
                    function_oidc_token_file=token_file, function_oidc_leeway_s=0)


def token(key: rsa.RSAPrivateKey, *, kid: str = "k1", aud: str = AUDIENCE, iss: str = ISSUER,
          exp_in: float = 300, **extra: Any) -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": [aud], "sub": "system:serviceaccount:driftloop:oidc-src",
              "iat": now - 10, "nbf": now - 10, "exp": int(now + exp_in), **extra}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def hs256(secret: bytes, claims: dict[str, Any]) -> str:
    """An HS256 JWT built by hand (PyJWT refuses to key HMAC with a PEM, as it should)."""
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).decode().rstrip("=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def check(auth: FunctionAuth, tok: str) -> None:
    auth.check({"Authorization": f"Bearer {tok}"})


def refused(auth: FunctionAuth, tok: str) -> str:
    with pytest.raises(Unauthorized) as e:
        check(auth, tok)
    return e.value.message


def test_oidc_valid_expired_wrong_audience_wrong_key(oidc_settings, issuer_key, jwks):
    auth = FunctionAuth.from_settings(oidc_settings)
    assert auth is not None
    check(auth, token(issuer_key))
    assert "expired" in refused(auth, token(issuer_key, exp_in=-5))
    assert "wrong audience" in refused(auth, token(issuer_key, aud="driftloop/promote"))
    assert "wrong issuer" in refused(auth, token(issuer_key, iss="https://evil.example"))
    other = rsa_key()
    assert "signature" in refused(auth, token(other))  # another key under the same kid
    assert "no signing key" in refused(auth, token(other, kid="k2"))
    # An HMAC token keyed with the issuer's public key (algorithm confusion) never passes.
    from cryptography.hazmat.primitives import serialization

    pem = issuer_key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    refused(auth, hs256(pem, {"iss": ISSUER, "aud": AUDIENCE, "sub": "x",
                              "iat": int(time.time()), "exp": int(time.time()) + 60}))
    no_exp = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": int(time.time())},
                        issuer_key, algorithm="RS256", headers={"kid": "k1"})
    assert "claim" in refused(auth, no_exp)
    refused(auth, "not.a.jwt")
    assert jwks.fetches >= 1


def test_oidc_subject_patterns(oidc_settings, issuer_key):
    auth = FunctionAuth.from_settings(oidc_settings.model_copy(
        update={"function_oidc_subjects": ("system:serviceaccount:driftloop:*",)}))
    check(auth, token(issuer_key))  # sub system:serviceaccount:driftloop:oidc-src
    assert "subject" in refused(auth, token(issuer_key,
                                             sub="system:serviceaccount:other-ns:anything"))


def test_oidc_unreachable_jwks_is_503_not_a_pass(tmp_path, issuer_key, jwks):
    url = jwks.url
    jwks.close()
    auth = FunctionAuth.from_settings(Settings(
        state_dir=tmp_path, function_oidc_issuer=ISSUER, function_oidc_jwks_url=url,
        function_oidc_audience=AUDIENCE))
    with pytest.raises(Unavailable):
        check(auth, token(issuer_key))


def test_oidc_needs_an_audience(tmp_path):
    with pytest.raises(ValueError, match="AUDIENCE"):
        FunctionAuth.from_settings(Settings(state_dir=tmp_path, function_oidc_issuer=ISSUER))


def test_drift_check_takes_a_knative_oidc_delivery(oidc_settings, issuer_key):
    client, service = serve("drift-check", "drift_check", DriftCheckService, oidc_settings)
    ok = client.post("/", headers={**HEADERS, "Authorization": f"Bearer {token(issuer_key)}"},
                     content=BODY)
    assert (ok.status_code, ok.content) == own_answer(service)
    for bad in (token(issuer_key, exp_in=-5), token(issuer_key, aud="other"),
                token(rsa_key())):
        r = client.post("/", headers={**HEADERS, "Authorization": f"Bearer {bad}"},
                        content=BODY)
        assert r.status_code == 401, r.text
    assert client.post("/", headers=HEADERS, content=BODY).status_code == 401


def test_static_tokens_and_oidc_together(oidc_settings, issuer_key):
    auth = FunctionAuth.from_settings(Settings(**{**oidc_settings.reveal(),
                                                  "function_tokens": "local-tok"}))
    check(auth, "local-tok")
    check(auth, token(issuer_key))
    refused(auth, "other-tok")


def test_own_callers_send_the_first_token(tmp_path):
    from driftloop.auth import client_headers
    from driftloop.local.eventing.delivery import delivery_token

    s = Settings(state_dir=tmp_path, function_tokens=" first-tok ,second-tok")
    assert client_headers(s) == {"authorization": "Bearer first-tok"}
    assert delivery_token(s) == "first-tok"
    assert client_headers(Settings(state_dir=tmp_path)) == {}
    assert delivery_token(Settings(state_dir=tmp_path)) is None
