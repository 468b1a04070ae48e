"""The OpenAPI document (GET /openapi.json) and the documentation page (GET /docs).

The document must be valid OpenAPI 3.1, describe every route of the app and nothing
else, name every error code the service answers, show the running instance's limits, and
describe the message exactly as the validator judges it. tests/e2e/test_api_fuzzing.py
checks the running service against it.
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from pushservice import create_app
from pushservice.message import MESSAGE_TYPES, PRIORITIES, MessageFactory, Problems
from pushservice.settings import Settings
from pushservice.web.openapi_schemas import ERROR_CODES

PACKAGE = Path(__file__).resolve().parents[2] / "pushservice"
SECRET = "a-test-secret-that-is-long-enough-0123456789abcdef"


def make_app(**changes):
    return create_app(Settings(jwt_secret=SECRET, **changes))


def document_of(app) -> dict:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


@pytest.mark.parametrize("enable_auth", [True, False])
def test_the_document_is_valid_openapi_3_1(enable_auth):
    document = document_of(make_app(enable_auth=enable_auth))
    assert document["openapi"].startswith("3.1")
    validate(document)


def _flask_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_route_is_documented_and_nothing_else():
    app = make_app()
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        methods = {method.lower() for method in rule.methods} - {"head", "options"}
        routes.setdefault(_flask_path(rule.rule), set()).update(methods)
    documented = {path: set(item) - {"head"}
                  for path, item in document_of(app)["paths"].items()}
    assert documented == routes
    # HEAD is documented only where GET answers it (Flask adds it to every GET).
    for path, item in document_of(app)["paths"].items():
        if "head" in item:
            assert "get" in item, path


def _codes_in_source() -> set[str]:
    codes = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        codes.update(re.findall(r'\bcode\s*=\s*"([a-z_]+)"', text))
        codes.update(re.findall(r'"code":\s*"([a-z_]+)"', text))
    return codes


def test_every_error_code_the_service_answers_is_documented():
    documented = {code for codes in ERROR_CODES.values() for code in codes}
    # Codes built at run time: invalid_<parameter> in web/subscribe.py and
    # web/connections.py.
    built = {f"invalid_{name}" for name in ("channel", "user_id", "session_id",
                                            "service_name", "user", "topic", "instance",
                                            "cursor")}
    # Codes that are not errors: stream refusals are 200 event streams.
    refusals = {"too_many_connections", "not_ready", "too_many_user_connections",
                "unauthorized", "forbidden", "too_many_requests", "service_unavailable",
                "http_error"}
    missing = (_codes_in_source() | built) - documented - refusals
    assert not missing, f"error codes not in the document: {sorted(missing)}"


def test_every_operation_documents_the_errors_it_can_answer():
    document = document_of(make_app())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            secured = operation.get("security") not in (None, [])
            if secured:
                assert "401" in operation["responses"], (method, path)
                header = operation["responses"]["401"]["headers"]["WWW-Authenticate"]
                assert header["required"] is True


def test_the_document_shows_the_instances_limits():
    document = document_of(make_app(message_ttl=60, max_batch_size=7, max_name_length=20,
                                    auth_cookie_name="push_cookie"))
    message = document["components"]["schemas"]["Message"]["properties"]
    assert message["metadata"]["properties"]["ttl"]["maximum"] == 60
    assert message["id"]["maxLength"] == 20
    batch = document["components"]["schemas"]["Batch"]["oneOf"][1]
    assert batch["maxItems"] == 7
    cookie = document["components"]["securitySchemes"]["token_cookie"]
    assert cookie["name"] == "push_cookie"


def test_security_follows_whether_authentication_is_on():
    secured = document_of(make_app(enable_auth=True))["paths"]
    assert secured["/api/v1/messages/send"]["post"]["security"] == [{"bearer": []}]
    assert {"token_query": []} in secured["/sse/user/{user_id}"]["get"]["security"]
    assert secured["/health"]["get"]["security"] == []
    open_paths = document_of(make_app(enable_auth=False))["paths"]
    assert open_paths["/api/v1/messages/send"]["post"]["security"] == []
    assert "401" not in open_paths["/api/v1/messages/send"]["post"]["responses"]


def test_the_docs_page_loads_swagger_ui_from_the_service_itself():
    client = make_app().test_client()
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/openapi.json" in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith("/docs/") for source in sources)
    for source in sources:
        assert client.get(source).status_code == 200, source
    missing = client.get("/docs/no-such-file.js")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"


# -- the message's schema is the validator's judgement -------------------------------------

FACTORY = MessageFactory(message_ttl=3600, max_message_bytes=1 << 20, max_name_length=24,
                         max_topics=5)


def _schema_validator(broadcast: bool) -> jsonschema.Validator:
    # JSON's 1.0 is an integer to JSON Schema but a float to the validator: the
    # generator below never makes integral floats, so strict types lose nothing.
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
    return cls(FACTORY.json_schema(broadcast), format_checker=jsonschema.FormatChecker())


VALIDATORS = {broadcast: _schema_validator(broadcast) for broadcast in (False, True)}

good_names = st.from_regex(r"[A-Za-z0-9_.:@-]{1,24}", fullmatch=True)
bad_names = st.sampled_from(["", "a b", "a,b", "x" * 25, "line\nbreak", "glob*", "é"])
names = st.one_of(good_names, good_names, bad_names)
odd_values = st.one_of(st.none(), st.booleans(), st.just(1.5), st.just([]), st.just({}),
                       st.integers(-(2**63), 2**63 - 1), bad_names)
target_keys = st.one_of(st.sampled_from(["channel", "user_id", "kb_id", "task_id"]),
                        st.sampled_from(["User_id", "id", "_id", "channels", "x" * 40 + "_id"]))
targets = st.one_of(
    st.dictionaries(target_keys, st.one_of(names, st.integers(-1000, 10**6),
                                           st.lists(names, max_size=3), odd_values),
                    max_size=3),
    odd_values)
timestamps = st.sampled_from([None, "2025-07-30T15:10:00.123Z", "2025-07-30T15:10:00+08:00",
                              "yesterday", "", 20250730])
metadata = st.one_of(
    st.fixed_dictionaries({}, optional={
        "priority": st.one_of(st.sampled_from(PRIORITIES), odd_values),
        "ttl": st.one_of(st.integers(-5, 4000), odd_values),
        "retry_count": st.one_of(st.integers(-3, 3), odd_values),
        "require_ack": st.one_of(st.booleans(), st.booleans(), odd_values),
        "ack_timeout": st.one_of(st.integers(-5, 4000), odd_values),
        "extra": odd_values}),
    odd_values)
messages = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(MESSAGE_TYPES), odd_values),
     "service": st.one_of(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), names,
                          odd_values)},
    optional={"id": st.one_of(names, odd_values), "timestamp": timestamps,
              "source": st.one_of(st.sampled_from(["worker-1", "", "a\x00b", "x" * 129,
                                                   "中文 ok"]), odd_values),
              "target": targets,
              "data": st.one_of(st.fixed_dictionaries({}, optional={
                  "progress": st.one_of(st.integers(-10, 110), st.floats(-1, 101).filter(
                      lambda x: not x.is_integer()), odd_values)}), odd_values),
              "metadata": metadata,
              "color": st.just("blue")})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=messages, broadcast=st.booleans())
def test_the_message_schema_accepts_exactly_what_the_validator_accepts(raw, broadcast):
    problems = Problems()
    FACTORY.check(raw, problems, broadcast=broadcast)
    errors = [error.message for error in VALIDATORS[broadcast].iter_errors(raw)]
    assert (not problems) == (not errors), (problems.items, errors)


# -- what fuzzing the running service against the document found --------------------------


def test_delete_on_the_stats_path_is_not_a_connection_named_stats():
    # DELETE /api/v1/connections/stats tried to close a connection called "stats" (404),
    # and OPTIONS there offered DELETE, which the document rightly does not.
    client = make_app(enable_auth=False).test_client()
    refused = client.delete("/api/v1/connections/stats")
    assert refused.status_code == 405
    assert refused.get_json()["error"]["code"] == "method_not_allowed"
    assert "DELETE" not in refused.headers["Allow"]
    assert "DELETE" not in client.options("/api/v1/connections/stats").headers["Allow"]
    assert client.delete("/api/v1/connections/statsx").status_code != 405


def test_get_on_a_publish_path_is_not_a_message_status():
    # GET /api/v1/messages/send matched GET /api/v1/messages/{message_id}: OPTIONS offered
    # GET on every publish path, which the document rightly does not.
    client = make_app(enable_auth=False).test_client()
    for path in ("send", "broadcast", "batch", "ack", "status"):
        refused = client.get(f"/api/v1/messages/{path}")
        assert refused.status_code == 405, path
        assert refused.get_json()["error"]["code"] == "method_not_allowed"
        assert refused.headers["Allow"].split(", ").count("GET") == 0, path
        assert "GET" not in client.options(f"/api/v1/messages/{path}").headers["Allow"]
