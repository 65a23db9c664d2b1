"""The playground setting and routes, without a browser (tests/browser drives the page itself in Chromium)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.api.playground import ASSETS, CONTENT_SECURITY_POLICY, PATHS
from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine
from server.profiles import list_profiles
from server.settings_loader import load_settings


def test_on_for_the_embedded_demo_off_when_a_model_is_given_unless_set() -> None:
    assert Settings().playground_enabled
    assert not Settings(model="/models/Qwen3-VL-8B-Instruct").playground_enabled
    assert Settings(model="/models/Qwen3-VL-8B-Instruct", playground=True).playground_enabled
    assert not Settings(playground=False).playground_enabled


def test_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_cli_parse_args=["--model", "/m", "--playground"]).playground_enabled  # type: ignore[call-arg]
    assert not Settings(_cli_parse_args=["--no-playground"]).playground_enabled  # type: ignore[call-arg]
    monkeypatch.setenv("QWEN3VL_PLAYGROUND", "false")
    assert not Settings().playground_enabled


@pytest.mark.parametrize("profile", list_profiles())
def test_off_for_every_production_profile(profile: str) -> None:
    assert not load_settings(profile=profile).playground_enabled


def _client(**settings: object) -> TestClient:
    return TestClient(create_app(Settings(warmup=False, **settings), engine=FakeEngine()))  # type: ignore[arg-type]


def test_served_with_its_security_headers_when_on() -> None:
    with _client() as client:
        for path, (_, media_type) in ASSETS.items():
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == media_type
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
        assert '<script type="module" src="/playground/playground.js">' in client.get("/").text
        assert client.get("/playground/other.js").status_code == 404
        assert not set(client.get("/openapi.json").json()["paths"]) & PATHS  # not part of the API document


def test_absent_when_off() -> None:
    with _client(model="/models/some-checkpoint") as client:
        for path in ASSETS:
            assert client.get(path).status_code == 404, path


def test_with_auth_the_page_is_open_and_the_api_still_needs_the_key() -> None:
    with _client(api_keys=["sk-test"]) as client:
        for path in ASSETS:
            assert client.get(path).status_code == 200, path
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer sk-test"}).status_code == 200
    with _client(api_keys=["sk-test"], playground=False) as client:
        assert client.get("/").status_code == 401  # off: not an open path either
