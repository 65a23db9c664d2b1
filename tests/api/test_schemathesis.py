"""schemathesis against our own ``/openapi.json``: every operation, generated requests (valid and invalid ones), and
schemathesis's whole check set: no 5xx, no response that breaks the document (status code, content type, headers, body
schema, stream events), invalid requests refused, a 405 with its Allow header for undeclared methods, and chat requests
the document calls valid accepted; then the server must still be healthy and serve a chat completion.

The app runs in process over the FakeEngine (as in conftest.py). Media fetching never reaches the network: no http(s)
host passes the allow- and deny-lists (both checked before any DNS lookup) and ``file://`` is off, so only ``data:``
URLs are decoded.

The schema is loaded at import, as schemathesis's pytest integration expects (its lazy ``from_fixture`` fails on pytest
9.2, which dropped ``Node._nodeid``). Loading reads ``/openapi.json`` through the app and so starts the app's lifespan,
as a server would; it is shut down after this module. No example database: with the fixed seed, every run is the same.
"""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine

CHAT = "/v1/chat/completions"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The refusals of server/schemas/tools.py's check_json_schema: what an OpenAPI document cannot state about a schema.
SCHEMA_REFUSAL = re.compile(r"not a valid JSON schema at|the schema takes \d+ bytes|the schema nests deeper than")
VALID_MESSAGES: list[Any] = [{"role": "user", "content": "Describe the picture."}]
ENGINE = FakeEngine()
APP = create_app(
    Settings(
        warmup=False,
        limit_mm_per_prompt={"image": 3, "video": 1},
        media_max_image_bytes=200_000,
        # Only media.invalid is allowed, and it is denied: every http(s) media URL is refused before any DNS lookup.
        media_allowed_domains=["media.invalid"],
        media_denied_domains=["media.invalid"],
    ),
    engine=ENGINE,
)
# The same app with API keys, for the 401s (schemathesis sends a case to another app with `call(app=...)`).
AUTH_APP = create_app(Settings(warmup=False, api_keys=["sk-test"]), engine=FakeEngine())
# A fixed seed: `make test` runs the same requests every time (a schema change changes them, as it should).
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=schemathesis.Config.from_dict({"seed": 7}))

# What the run saw, for the checks after it: status codes per operation, and the chats that got an answer.
SEEN: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
ANSWERED = collections.Counter[str]()
_turn = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _stop_lifespan() -> Iterator[None]:
    yield
    asgi.shutdown_lifespans()


def _aim_at_the_handler(case: schemathesis.Case[Any]) -> None:
    """Most generated chat bodies name a model that does not exist (404), generated media cannot be fetched (or are more
    than a request may carry), and the optional ``stream`` is rarely generated at all. So that generated sampling
    options, tools, response formats and both kinds of response reach the service, three valid bodies in four get the
    served model and a valid conversation, and two of those ``stream: true`` (a positive chat case is rare among the
    generated ones, and a generated ``max_tokens`` often exceeds the context: both kinds must still get answers); the
    rest of each body stays as
    generated, except for the one cross-field rule a JSON schema cannot state: a named ``tool_choice`` names a tool."""
    if case.meta is None or not case.meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return
    turn = next(_turn) % 4
    if turn > 0:
        case.body["model"] = ENGINE.model_name
        case.body["messages"] = VALID_MESSAGES
        choice, tools = case.body.get("tool_choice"), case.body.get("tools")
        if isinstance(choice, dict) and tools:
            choice["function"]["name"] = tools[0]["function"]["name"]
    if turn > 1:
        case.body["stream"] = True


def _checks_that_do_not_apply(case: schemathesis.Case[Any], response: schemathesis.Response) -> list[Any]:
    """A valid request may still be refused for what the document cannot know (an unknown model, media that cannot be
    fetched or more of them than the server takes, a completion limit beyond the context window, a tool's or response
    format's JSON schema that breaks the JSON Schema meta-schema or the schema size limits): schema-valid chats must be
    accepted only with a served model and a valid conversation, unless one of those refusals applies."""
    excluded = []
    aimed = isinstance(case.body, dict) and case.body.get("messages") is VALID_MESSAGES
    error = response.json().get("error", {}) if response.status_code == 400 else {}
    too_long = error.get("code") == "context_length_exceeded"
    bad_schema = error.get("code") == "invalid_value" and SCHEMA_REFUSAL.search(error.get("message", "")) is not None
    if case.operation.path != CHAT or not aimed or too_long or bad_schema:
        excluded.append(positive_data_acceptance)
    return excluded


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_responses_match_the_openapi_document(case: schemathesis.Case[Any]) -> None:
    if case.operation.path == CHAT:
        _aim_at_the_handler(case)
    response = case.call()
    SEEN[case.operation.label][response.status_code] += 1
    case.validate_response(response, excluded_checks=_checks_that_do_not_apply(case, response))
    if case.operation.path == CHAT and response.status_code == 200:
        streamed = any(value.startswith("text/event-stream") for value in response.headers.get("content-type", []))
        ANSWERED["stream" if streamed else "json"] += 1
        if streamed:  # the per-event schema cannot say that the stream ends with [DONE]
            assert response.content.endswith(b"data: [DONE]\n\n"), response.content[-200:]


def test_server_is_healthy_after_the_run() -> None:
    if not SEEN:
        pytest.skip("runs after test_responses_match_the_openapi_document")
    # Every operation was exercised; generated chat bodies reached the service, streamed and not.
    assert set(SEEN) == {f"{method.upper()} {path}" for path, item in APP.openapi()["paths"].items() for method in item}
    assert ANSWERED["json"] >= 3 and ANSWERED["stream"] >= 3, (dict(SEEN), ANSWERED)

    health = schema["/health"]["GET"].Case().call()
    assert health.status_code == 200, health.text
    body: dict[str, Any] = {"model": ENGINE.model_name, "messages": VALID_MESSAGES, "max_tokens": 8}
    chat = schema[CHAT]["POST"].Case(body=body).call()
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == "".join(ENGINE.script)  # all the engine generated
    # Nothing leaked: no admission slot held, no engine request left running.
    admission = APP.state.qwen3vl.admission
    assert (admission.running, admission.queued, ENGINE.in_flight) == (0, 0, 0)


def test_document_describes_every_route() -> None:
    document = APP.openapi()
    operations = {(path, method): op for path, item in document["paths"].items() for method, op in item.items()}
    routes = {
        "/v1/chat/completions",
        "/v1/chat/completions/count_tokens",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/files/{file_id}/content",
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/cancel",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{model_id}",
        "/health",
        "/startup",
        "/ready",
    }
    assert {path for path, _ in operations} == routes | {"/version", "/metrics"}
    for (path, _), op in operations.items():
        statuses = set(op["responses"])
        assert "422" not in statuses, path  # validation errors are 400s
        assert {"200", "401", "500"} <= statuses, path
    chat = operations[("/v1/chat/completions", "post")]["responses"]
    assert set(chat["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {"400", "404", "413", "415", "429", "503", "504"} <= set(chat)
    refs = {value for value in _walk(document) if isinstance(value, str) and value.startswith("#/components/schemas/")}
    assert {ref.rsplit("/", 1)[1] for ref in refs} <= set(document["components"]["schemas"])
    assert "HTTPValidationError" not in document["components"]["schemas"]


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)
    else:
        yield node


def _one_valid_case_per_operation() -> Iterator[schemathesis.Case[Any]]:
    for path, item in APP.openapi()["paths"].items():
        for method in item:
            operation = schema[path][method.upper()]
            if "{model_id}" in path:
                yield operation.Case(path_parameters={"model_id": ENGINE.model_name})
            elif "{" in path:
                names = [part.strip("{}") for part in path.split("/") if part.startswith("{")]
                yield operation.Case(path_parameters={name: "unknown" for name in names})
            elif path == "/v1/files" and method == "post":
                yield operation.Case(body={"purpose": "batch", "file": b"{}"}, media_type="multipart/form-data")
            elif path == "/v1/batches" and method == "post":
                yield operation.Case(
                    body={"input_file_id": "unknown", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
                )
            elif method == "post":
                yield operation.Case(body={"model": ENGINE.model_name, "messages": VALID_MESSAGES})
            else:
                yield operation.Case()


def test_refusals_match_the_document() -> None:
    """The guard's refusals, which generated requests never meet: no API key (401) and draining (503)."""
    open_paths = set(Settings().open_paths)
    for case in _one_valid_case_per_operation():
        response = case.call(app=AUTH_APP)
        assert response.status_code == (200 if case.path in open_paths else 401), (case.path, response.text)
        case.validate_response(response, checks=CHECKS)
    APP.state.qwen3vl.draining = True
    try:
        for case in _one_valid_case_per_operation():
            response = case.call()
            # /ready is 503 by design; the operator's read-only routes keep answering so that the drain can be watched
            expected = {"/health": 200, "/startup": 200, "/metrics": 200, "/version": 200}.get(case.path, 503)
            assert response.status_code == expected, (case.path, response.text)
            case.validate_response(response, checks=CHECKS[1:])  # a 503 is what draining is for
    finally:
        APP.state.qwen3vl.draining = False
