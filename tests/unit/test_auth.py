"""Tokens, claims and permissions (pushservice.auth), and the HTTP surface that uses them
before anything touches Redis: 401, 403 and 400 answers, token sources, the admin check,
the auth cookie and the tokens command."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import jsonify

from pushservice import create_app
from pushservice.auth import (
    Authenticator,
    Principal,
    admin_only,
    build_claims,
    mint_token,
)
from pushservice.errors import SettingsError, UnauthorizedError
from pushservice.message import MessageFactory
from pushservice.settings import Settings
from pushservice.tokens import main as tokens_main

SECRET = "0123456789abcdef0123456789abcdef-unit-tests"
OTHER_SECRET = "fedcba9876543210fedcba9876543210-forged"


def _pem_pair(private_key) -> tuple[bytes, str]:
    private = private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, str]:
    return _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_keys() -> tuple[bytes, str]:
    return _pem_pair(ec.generate_private_key(ec.SECP256R1()))


def _settings(**changes) -> Settings:
    return Settings(jwt_secret=SECRET).replace(**changes)


def _token(subject: str = "123", key: str | bytes = SECRET, algorithm: str = "HS256",
           **claims) -> str:
    return mint_token(build_claims(subject, **claims), key, algorithm)


def _refusal(authenticator: Authenticator, token: str) -> str:
    with pytest.raises(UnauthorizedError) as caught:
        authenticator.verify(token)
    assert caught.value.status == 401
    assert caught.value.headers()["WWW-Authenticate"].startswith('Bearer realm="pushservice"')
    return caught.value.code


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- verifying tokens ---------------------------------------------------------------------


def test_a_good_token_gives_its_principal():
    auth = Authenticator(_settings())
    token = _token("123", subscribe=["kb:kb789", "task:*"], service="knowledge-service",
                   publish=["user:*"], broadcast=True, roles=["admin"], ttl_seconds=60)
    principal = auth.verify(token)
    assert principal.subject == "123"
    assert principal.subscribe == ("kb:kb789", "task:*")
    assert principal.service == "knowledge-service"
    assert principal.publish == ("user:*",)
    assert principal.broadcast and principal.is_admin
    # The stream closes when the token stops being accepted: exp plus the leeway.
    assert time.time() + 60 < principal.expires_at <= time.time() + 60 + 10 + 1


def test_expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway():
    auth = Authenticator(_settings(jwt_leeway_seconds=5))
    assert auth.verify(_token(ttl_seconds=-3)).subject == "123"  # within the leeway
    assert _refusal(auth, _token(ttl_seconds=-30)) == "token_expired"
    assert _refusal(auth, _token(not_before_seconds=60)) == "token_not_yet_valid"
    claims = build_claims("123")
    claims["iat"] = int(time.time()) + 600
    assert _refusal(auth, mint_token(claims, SECRET)) == "token_not_yet_valid"


def test_forged_tampered_and_garbage_tokens_are_refused():
    auth = Authenticator(_settings())
    assert _refusal(auth, _token(key=OTHER_SECRET)) == "invalid_token"
    header, _, signature = _token("123").split(".")
    tampered = f"{header}.{_b64(build_claims('456'))}.{signature.split('.')[-1]}"
    assert _refusal(auth, tampered) == "invalid_token"
    for garbage in ("", "abc", "a.b.c", "....", "x" * 9000, "eyJ.\n.x", "ünïcode.a.b"):
        assert _refusal(auth, garbage) == "invalid_token"


def test_alg_none_is_refused():
    auth = Authenticator(_settings())
    for alg in ("none", "None", "NONE", ""):
        unsigned = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(build_claims('123'))}."
        assert _refusal(auth, unsigned) == "invalid_token"


def test_algorithm_confusion_with_the_public_key_is_refused(rsa_keys):
    private, public = rsa_keys
    auth = Authenticator(_settings(jwt_algorithms=("HS256", "RS256"), jwt_public_key=public))
    assert auth.verify(_token(key=private, algorithm="RS256")).subject == "123"
    # HS256 "signed" with the public key, which an attacker knows: hand-made, because
    # PyJWT refuses to build such a token.
    import hashlib
    import hmac

    head = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(build_claims('123'))}"
    mac = hmac.new(public.encode(), head.encode(), hashlib.sha256).digest()
    forged = head + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert _refusal(auth, forged) == "invalid_token"


def test_only_listed_algorithms_are_accepted(rsa_keys, ec_keys):
    rsa_private, _ = rsa_keys
    ec_private, ec_public = ec_keys
    hs_only = Authenticator(_settings())
    assert _refusal(hs_only, _token(key=SECRET * 2, algorithm="HS512")) == "invalid_token"
    assert _refusal(hs_only, _token(key=rsa_private, algorithm="RS256")) == "invalid_token"
    es_only = Authenticator(_settings(jwt_algorithms=("ES256",), jwt_public_key=ec_public,
                                      jwt_secret=""))
    assert es_only.verify(_token(key=ec_private, algorithm="ES256")).subject == "123"
    assert _refusal(es_only, _token()) == "invalid_token"


def test_exp_and_sub_are_required():
    auth = Authenticator(_settings())
    for missing in ("exp", "sub"):
        claims = build_claims("123")
        del claims[missing]
        assert _refusal(auth, mint_token(claims, SECRET)) == "invalid_token"


@pytest.mark.parametrize("claim, value", [
    ("exp", str(int(time.time()) + 3600)),  # a numeric string: JWT wants a number
    ("exp", 1e300), ("exp", 253_402_300_800), ("exp", (int(time.time()) + 3600) * 1000),
    ("exp", [1]), ("nbf", "0"), ("iat", {"t": 1}), ("iat", -5),
])
def test_time_claims_must_be_seconds_since_1970(claim, value):
    claims = build_claims("123")
    claims[claim] = value
    assert _refusal(Authenticator(_settings()), mint_token(claims, SECRET)) == "invalid_token"


def test_a_token_valid_until_year_9999_is_accepted_and_its_cookie_lives_400_days(fake_clients):
    claims = build_claims("123")
    claims["exp"] = 253_402_300_799
    token = mint_token(claims, SECRET)
    assert Authenticator(_settings()).verify(token).expires_at > 253_402_300_799
    client = create_app(_settings()).test_client()
    response = client.post("/api/v1/auth/cookie", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 204
    assert "Max-Age=34560000" in response.headers["Set-Cookie"]


def test_issuer_and_audience_are_checked_when_configured():
    auth = Authenticator(_settings(jwt_issuer="https://login.example",
                                   jwt_audience=("pushservice", "push")))
    good = {"issuer": "https://login.example", "audience": "push"}
    assert auth.verify(_token(**good)).subject == "123"
    assert auth.verify(_token(issuer="https://login.example",
                              audience=["other", "pushservice"])).subject == "123"
    assert _refusal(auth, _token(issuer="https://evil.example", audience="push")) == (
        "invalid_issuer")
    assert _refusal(auth, _token(issuer="https://login.example", audience="other")) == (
        "invalid_audience")
    assert _refusal(auth, _token(audience="push")) == "invalid_token"  # no iss at all
    # Without a configured audience, a token meant for someone else is refused too.
    assert _refusal(Authenticator(_settings()), _token(audience="billing")) == (
        "invalid_audience")


@pytest.mark.parametrize("push", [
    "admin",
    {"subscribe": "kb:*"},
    {"subscribe": ["kb:[a-z]*"]},
    {"subscribe": ["kb:1\n"]},
    {"publish": [1]},
    {"service": "knowledge service"},
    {"service": 7},
    {"broadcast": "yes"},
    {"roles": "admin"},
    {"roles": ["Admin!"]},
])
def test_malformed_claims_make_the_token_invalid(push):
    auth = Authenticator(_settings())
    claims = build_claims("123")
    claims["push"] = push
    assert _refusal(auth, mint_token(claims, SECRET)) == "invalid_token"


@pytest.mark.parametrize("subject", ["", "a\nb", "user 1", "x" * 129, "a,b", "*"])
def test_a_subject_that_is_not_a_name_makes_the_token_invalid(subject):
    auth = Authenticator(_settings())
    claims = build_claims("placeholder")
    claims["sub"] = subject
    assert _refusal(auth, mint_token(claims, SECRET)) == "invalid_token"


def test_settings_that_cannot_authenticate_refuse_to_build(rsa_keys, ec_keys):
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Authenticator(Settings(jwt_secret="too-short"))
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY"):
        Authenticator(_settings(jwt_algorithms=("RS256",), jwt_public_key=""))
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY is not a public key"):
        Authenticator(_settings(jwt_algorithms=("RS256",), jwt_public_key="-----BEGIN x"))
    with pytest.raises(SettingsError, match="not a public key for RS256"):
        Authenticator(_settings(jwt_algorithms=("RS256",), jwt_public_key=ec_keys[1]))
    # Disabled: nothing is needed, and everyone is allowed everything.
    assert Authenticator(Settings(enable_auth=False)).verify("anything").unrestricted


# -- permissions ------------------------------------------------------------------------------


def test_a_subscriber_reads_its_own_user_topic_and_its_patterns_only():
    principal = Principal(subject="123", subscribe=("kb:kb789", "task:*"))
    assert principal.may_subscribe("user:123")
    assert principal.may_subscribe("kb:kb789") and principal.may_subscribe("task:abc")
    for topic in ("user:456", "user:1234", "kb:kb7890", "kb:other", "service:x",
                  "session:s1", "task", "tasks:1"):
        assert not principal.may_subscribe(topic), topic


def test_one_forbidden_topic_refuses_the_whole_subscription_naming_it():
    principal = Principal(subject="123", subscribe=("kb:*",))
    principal.check_subscribe(["user:123", "kb:1"])
    with pytest.raises(Exception) as caught:
        principal.check_subscribe(["kb:1", "user:9", "kb:2", "session:x"])
    assert caught.value.status == 403 and caught.value.code == "topic_forbidden"
    assert caught.value.details["forbidden"] == ["user:9", "session:x"]
    assert "user:9, session:x" in caught.value.message


def _message(service="knowledge-service", broadcast=False, **target):
    factory = MessageFactory(3600, 65536)
    return factory.build({"type": "info", "service": service,
                          "target": target or {"user_id": "1"}}, broadcast=broadcast)


def test_a_publisher_publishes_as_its_own_service_to_its_patterns():
    principal = Principal(subject="ks", service="knowledge-service",
                          publish=("user:*", "kb:*"))
    assert principal.publish_problem(_message(user_id="1", kb_id="kb789")) is None
    assert principal.publish_problem(_message(service="agent-service"))["code"] == (
        "service_mismatch")
    assert principal.publish_problem(_message(task_id="t1"))["topic"] == "task:t1"
    # service:<name> is what that service publishes: nobody else may write there.
    for target in ({"channel": "service:agent-service"}, {"service_id": "agent-service"}):
        problem = Principal(subject="ks", service="knowledge-service",
                            publish=("*",)).publish_problem(_message(**target))
        assert problem["code"] == "service_mismatch"
    assert principal.publish_problem(_message(channel="service:knowledge-service")) is None


def test_broadcast_needs_its_own_permission():
    message = _message(broadcast=True)
    everything = Principal(subject="ks", service="knowledge-service", publish=("*",))
    assert everything.publish_problem(message, broadcast=True)["code"] == "broadcast_forbidden"
    allowed = Principal(subject="ks", service="knowledge-service", broadcast=True)
    assert allowed.publish_problem(message, broadcast=True) is None
    assert Principal(subject="123").publish_problem(message, True)["code"] == (
        "publish_forbidden")


def test_a_batch_with_one_refused_message_is_refused_whole():
    principal = Principal(subject="ks", service="knowledge-service", publish=("user:*",))
    batch = [_message(user_id="1"), _message(kb_id="1"), _message(service="other")]
    with pytest.raises(Exception) as caught:
        principal.check_publish(batch)
    assert caught.value.status == 403 and caught.value.code == "topic_forbidden"
    assert [item["index"] for item in caught.value.details] == [1, 2]
    assert "nothing was published" in caught.value.message


# -- over HTTP (no Redis is reached: every refusal comes first) --------------------------------


@pytest.fixture
def app():
    app = create_app(_settings(cors_origins=("http://app.example",)))

    @app.get("/admin/ping")
    def ping():
        admin_only()
        return jsonify(ok=True)

    return app


@pytest.fixture
def client(app):
    return app.test_client()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code, body
    return body["error"]


def test_no_token_is_401_with_www_authenticate(client):
    response = client.post("/api/v1/messages/send", json={})
    _error(response, 401, "missing_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="pushservice"'
    response = client.get("/sse/user/123")
    error = _error(response, 401, "missing_token")
    assert "?token=" in error["message"] and "pushservice_token" in error["message"]


def test_a_bad_token_is_never_passed_over_for_another_source(client):
    good = _token("123")
    expired = _token("123", ttl_seconds=-3600)
    client.set_cookie("pushservice_token", good)
    # A bad header or query token is not replaced by the good cookie.
    _error(client.get("/sse/user/123", headers=_bearer(expired)), 401, "token_expired")
    _error(client.get(f"/sse/user/123?token={expired}"), 401, "token_expired")
    _error(client.get("/sse/user/123?token="), 401, "invalid_token")
    # An expired cookie is refused, not treated as anonymous.
    client.set_cookie("pushservice_token", expired)
    response = client.get("/sse/user/123")
    _error(response, 401, "token_expired")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_other_authorization_schemes_are_refused(client):
    response = client.get("/sse/user/123", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    _error(response, 401, "invalid_token")
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


def test_the_query_and_the_cookie_do_not_authenticate_the_publish_api(client):
    token = _token("ks", service="knowledge-service", publish=["*"])
    _error(client.post(f"/api/v1/messages/send?token={token}", json={}), 401, "missing_token")
    client.set_cookie("pushservice_token", token)
    _error(client.post("/api/v1/messages/send", json={}), 401, "missing_token")


def test_a_subscriber_cannot_open_another_users_stream(client):
    headers = _bearer(_token("123", subscribe=["kb:kb789"]))
    error = _error(client.get("/sse/user/456", headers=headers), 403, "topic_forbidden")
    assert error["details"]["forbidden"] == ["user:456"]
    error = _error(client.get("/sse/stream/kb:kb789,kb:secret", headers=headers), 403,
                   "topic_forbidden")
    assert error["details"]["forbidden"] == ["kb:secret"] and "kb:secret" in error["message"]
    _error(client.get("/sse/service/knowledge-service", headers=headers), 403,
           "topic_forbidden")
    _error(client.get("/sse/user/123?session_id=s1", headers=headers), 403, "topic_forbidden")


def test_stream_options_and_names_are_validated(client):
    headers = _bearer(_token("123", subscribe=["*"]))
    _error(client.get("/sse/user/123?named=maybe", headers=headers), 400, "invalid_parameter")
    _error(client.get("/sse/user/123?heartbeat_events=%00", headers=headers), 400,
           "invalid_parameter")
    _error(client.get("/sse/user/a%0Db", headers=headers), 400, "invalid_user_id")
    _error(client.get("/sse/stream/a?channel=b%0A", headers=headers), 400, "invalid_channel")
    names = ",".join(f"c{n}" for n in range(101))
    error = _error(client.get(f"/sse/stream/{names}", headers=headers), 400,
                   "too_many_channels")
    assert "MAX_CHANNELS_PER_CONNECTION" in error["message"]


def test_publish_permissions_over_http(client):
    subscriber = _bearer(_token("123"))
    publisher = _bearer(_token("ks", service="knowledge-service", publish=["user:*"]))
    message = {"type": "info", "service": "knowledge-service", "target": {"user_id": "1"}}
    _error(client.post("/api/v1/messages/send", json=message, headers=subscriber), 403,
           "publish_forbidden")
    _error(client.post("/api/v1/messages/send", json=dict(message, service="agent-service"),
                       headers=publisher), 403, "service_mismatch")
    _error(client.post("/api/v1/messages/broadcast", json=message, headers=publisher), 403,
           "broadcast_forbidden")
    _error(client.post("/api/v1/messages/batch", headers=publisher,
                       json={"messages": [message, dict(message, target={"kb_id": "1"})]}),
           403, "topic_forbidden")


def test_json_bodies_must_be_utf8_json(client):
    headers = _bearer(_token("ks", service="knowledge-service", publish=["*"]))
    response = client.post("/api/v1/messages/send", data=b"{}", headers={
        **headers, "Content-Type": "application/json; charset=latin-1"})
    _error(response, 415, "unsupported_media_type")


def test_admin_endpoints_need_the_admin_role(client):
    _error(client.get("/admin/ping"), 401, "missing_token")
    _error(client.get("/admin/ping", headers=_bearer(_token("ops"))), 403, "admin_required")
    response = client.get("/admin/ping", headers=_bearer(_token("ops", roles=["admin"])))
    assert response.status_code == 200 and response.get_json() == {"ok": True}


def test_without_auth_everything_is_open_and_a_warning_says_so(caplog):
    with caplog.at_level("WARNING", logger="pushservice"):
        app = create_app(Settings(enable_auth=False))
    assert any("every endpoint is open" in record.getMessage() for record in caplog.records)

    @app.get("/admin/ping")
    def ping():
        admin_only()
        return jsonify(ok=True)

    assert app.test_client().get("/admin/ping").status_code == 200


def test_errors_carry_cors_headers_for_listed_origins_only(client):
    listed = client.get("/sse/user/1", headers={"Origin": "http://app.example"})
    _error(listed, 401, "missing_token")
    assert listed.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert listed.headers["Access-Control-Allow-Credentials"] == "true"
    other = client.get("/sse/user/1", headers={"Origin": "http://evil.example"})
    _error(other, 401, "missing_token")
    assert "Access-Control-Allow-Origin" not in other.headers


def test_the_cookie_endpoint_sets_an_httponly_cookie_for_streams(client):
    token = _token("123", ttl_seconds=600)
    response = client.post("/api/v1/auth/cookie", headers=_bearer(token))
    assert response.status_code == 204
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"pushservice_token={token};")
    assert "HttpOnly" in cookie and "Path=/sse/" in cookie and "SameSite=Lax" in cookie
    assert 590 <= int(cookie.split("Max-Age=")[1].split(";")[0]) <= 610
    _error(client.post("/api/v1/auth/cookie"), 401, "missing_token")
    _error(client.post("/api/v1/auth/cookie", headers=_bearer(_token(ttl_seconds=-60))), 401,
           "token_expired")
    cleared = client.delete("/api/v1/auth/cookie")
    assert cleared.status_code == 204 and "Max-Age=0" in cleared.headers["Set-Cookie"]


# -- the tokens command -------------------------------------------------------------------------


def test_the_tokens_command_mints_what_the_service_accepts(capsys, rsa_keys, tmp_path):
    settings = _settings()
    auth = Authenticator(settings)
    assert tokens_main(["subscriber", "123", "--subscribe", "kb:kb789"], settings) == 0
    principal = auth.verify(capsys.readouterr().out.strip())
    assert principal.subject == "123" and principal.subscribe == ("kb:kb789",)
    assert principal.service is None and not principal.is_admin

    assert tokens_main(["publisher", "knowledge-service", "--broadcast"], settings) == 0
    principal = auth.verify(capsys.readouterr().out.strip())
    assert principal.service == "knowledge-service" and principal.publish == ("*",)
    assert principal.broadcast

    assert tokens_main(["admin", "ops", "--ttl", "-60"], settings) == 0
    assert _refusal(auth, capsys.readouterr().out.strip()) == "token_expired"

    private, public = rsa_keys
    key_file = tmp_path / "private.pem"
    key_file.write_bytes(private)
    rs = _settings(jwt_algorithms=("RS256",), jwt_public_key=public)
    assert tokens_main(["subscriber", "7", "--private-key", str(key_file)], rs) == 0
    assert Authenticator(rs).verify(capsys.readouterr().out.strip()).subject == "7"


def test_the_tokens_command_refuses_a_weak_secret(capsys):
    assert tokens_main(["subscriber", "1"], Settings(jwt_secret="short",
                                                      enable_auth=False)) == 2
    assert "JWT_SECRET" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["/api/v1/connections", "/api/v1/connections/stats",
                                  "/admin/instances"])
def test_the_connection_and_admin_apis_need_the_admin_role(path, fake_clients):
    client = create_app(_settings(cors_origins=("http://app.example",))).test_client()
    _error(client.get(path), 401, "missing_token")
    _error(client.get(path, headers=_bearer(_token("123", subscribe=["*"]))), 403,
           "admin_required")
    assert client.get(path, headers=_bearer(_token("ops", roles=["admin"]))).status_code == 200
    # A browser's preflight carries no token; the request it announces is checked.
    preflight = client.options(path, headers={"Origin": "http://app.example",
                                              "Access-Control-Request-Method": "GET",
                                              "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://app.example"


def test_closing_a_connection_needs_the_admin_role(fake_clients):
    client = create_app(_settings()).test_client()
    _error(client.delete("/api/v1/connections/c_1", headers=_bearer(_token("123"))), 403,
           "admin_required")


def test_metrics_can_require_the_admin_role(fake_clients):
    client = create_app(_settings(metrics_require_admin=True)).test_client()
    _error(client.get("/metrics"), 401, "missing_token")
    _error(client.get("/metrics", headers=_bearer(_token("123"))), 403, "admin_required")
    assert client.get("/metrics", headers=_bearer(_token("ops", roles=["admin"]))).status_code \
        == 200
    assert create_app(_settings()).test_client().get("/metrics").status_code == 200
