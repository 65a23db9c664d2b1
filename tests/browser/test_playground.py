"""The playground page in real headless Chromium, against the real app (fake engine) on a loopback port."""

from __future__ import annotations

import html.parser
import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from clients.grounding import Box, Point, parse_grounding
from server.api.playground import ASSETS, CONTENT_SECURITY_POLICY
from server.errors import EngineError
from tests.browser.conftest import ARTIFACTS, MediaServer, Served, Tab, VisualFakeEngine, playground_settings, serve
from tests.browser.conftest import wait_for as wait_until
from tests.media_factory import mp4_bytes

pytestmark = pytest.mark.browser

MODEL = "fake-qwen3vl"
IMAGE_COLOR = (90, 140, 200)


def png(width: int, height: int, color: tuple[int, int, int] = IMAGE_COLOR) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def attach(page: Page, *files: tuple[str, str, bytes]) -> None:
    before = page.locator(".attachment").count()
    page.set_input_files("#files", files=[{"name": n, "mimeType": m, "buffer": b} for n, m, b in files])
    expect(page.locator(".attachment")).to_have_count(before + len(files))


def ask(page: Page, prompt: str) -> Locator:
    before = page.locator("article.assistant").count()
    page.fill("#prompt", prompt)
    page.click("#send")
    expect(page.locator("article.assistant")).to_have_count(before + 1)
    return page.locator("article.assistant").last


def finished(answer: Locator, state: str = "done") -> Locator:
    expect(answer).to_have_attribute("data-state", state)
    return answer


def chat_bodies(tab: Tab) -> list[dict[str, Any]]:
    return [r.post_data_json for r in tab.api_requests("/v1/chat/completions")]


# --- loading -----------------------------------------------------------------------------------------------------


def test_page_loads_with_no_console_errors_and_lists_the_model(tab: Tab, server: Served) -> None:
    tab.open(server.base_url)
    expect(tab.page.locator("#status")).to_have_attribute("data-kind", "ok")
    expect(tab.page.locator("#model")).to_have_value(MODEL)
    assert tab.page.title() == "Qwen3-VL playground"
    loaded = {r.url.removeprefix(server.base_url) for r in tab.requests}
    assert set(ASSETS) - {"/playground/favicon.svg"} <= loaded  # the page, its modules and style sheet
    assert loaded <= set(ASSETS) | {"/v1/models"}  # and the model list; nothing else
    tab.assert_clean()


# --- an image question, streamed -----------------------------------------------------------------------------------


def test_image_question_streams_the_answer_with_usage_and_server_timing(tab: Tab, server: Served) -> None:
    tokens = [f"word{i} " for i in range(12)]
    server.engine.script = tokens
    server.engine.delay_s = 0.08
    tab.open(server.base_url)
    attach(tab.page, ("photo.png", "image/png", png(64, 48)))
    answer = ask(tab.page, "What is in this image?")
    text = answer.locator(".text")
    seen: list[str] = []
    while answer.get_attribute("data-state") in ("waiting", "streaming"):
        current = text.text_content() or ""
        if not seen or seen[-1] != current:
            seen.append(current)
        time.sleep(0.02)
    finished(answer)
    full = "".join(tokens)
    partial = [s for s in seen if s and s != full]
    assert len(partial) >= 3, seen  # it grew in steps, while streaming
    assert all(full.startswith(s) for s in seen)
    expect(text).to_have_text(full)

    # usage with the image's tokens, the server's stage timings, and the finish reason
    expect(answer.locator(".usage")).to_contain_text(f"(16 image) · completion {len(tokens)}")
    server_timing = answer.locator(".server-timing")
    for stage in ("queue", "media", "ttft"):
        expect(server_timing).to_contain_text(f"{stage} ")
    expect(answer.locator(".finish")).to_have_text("finish: stop")

    # the request is what any OpenAI client sends: streamed, with usage, the image as a data URL part
    (body,) = chat_bodies(tab)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == MODEL and body["max_tokens"] == 512
    image, prompt = body["messages"][-1]["content"]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    assert prompt == {"type": "text", "text": "What is in this image?"}
    assert len(server.engine.requests) == 1 and server.engine.requests[0].images[0].shape[1] > 0
    # the media went to our API only: every request the page made was to this server (or its own blob: previews)
    assert all(r.url.startswith((server.base_url, f"blob:{server.base_url}/")) for r in tab.requests), tab.requests
    tab.assert_clean()


def test_per_item_controls_video_and_sampling_fields_reach_the_api(tab: Tab, server: Served) -> None:
    tab.open(server.base_url)
    attach(tab.page, ("a.png", "image/png", png(300, 200)), ("clip.mp4", "video/mp4", mp4_bytes(frames=60, fps=10.0)))
    image_row, video_row = tab.page.locator(".attachment.image"), tab.page.locator(".attachment.video")
    image_row.locator("input[name=max_pixels]").fill("50176")
    video_row.locator("input[name=fps]").fill("1")
    video_row.locator("input[name=max_frames]").fill("4")
    tab.page.fill("#temperature", "0.3")
    tab.page.fill("#seed", "7")
    tab.page.fill("#max_tokens", "64")
    tab.page.fill("#system", "Be brief.")
    answer = finished(ask(tab.page, "Describe both."))

    (body,) = chat_bodies(tab)
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.3, 7, 64)
    assert "top_p" not in body and "top_k" not in body  # empty fields stay unset
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    image, video, _ = body["messages"][1]["content"]
    assert image["image_url"]["max_pixels"] == 50176
    assert video["type"] == "video_url" and video["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert (video["video_url"]["fps"], video["video_url"]["max_frames"]) == (1, 4)
    # and the server applied them: the image within its pixel budget; the 6 s clip at 1 fps would give 6 frames (12 at
    # the default 2 fps), max_frames keeps 4
    (request,) = server.engine.requests
    height, width = request.images[0].shape[:2]
    assert width * height <= 50176
    assert len(request.videos[0].frames_indices) == 4
    expect(answer.locator(".usage")).to_contain_text("(16 image, 32 video)")
    tab.assert_clean()


def test_url_media_is_fetched_by_the_server_not_the_page(tab: Tab, server: Served, media_server: MediaServer) -> None:
    url = media_server.add("/cat.png", "image/png", png(200, 100))
    server.engine.script = ['{"bbox_2d": [100, 200, 500, 600], "label": "cat"}']
    tab.open(server.base_url)
    tab.page.fill("#media-url", url)
    tab.page.click("#add-url")
    expect(tab.page.locator(".attachment.image .name")).to_contain_text(url)
    answer = finished(ask(tab.page, "Where is the cat?"))
    (body,) = chat_bodies(tab)
    assert body["messages"][0]["content"][0] == {"type": "image_url", "image_url": {"url": url}}
    assert media_server.hits == ["/cat.png"]  # once, by the server
    assert not any(r.url.startswith(url) for r in tab.requests)  # never by the page
    # the page cannot show a URL image (its CSP loads nothing from elsewhere): the boxes are listed instead
    expect(answer.locator(".grounding figcaption")).to_contain_text("cat [100, 200, 500, 600]")
    tab.assert_clean()


# --- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "status", "code", "message"),
    [
        ({"#model": "nope"}, "HTTP 404", "model_not_found", "the model 'nope' does not exist"),
        ({"#max_tokens": "100000"}, "HTTP 400", "context_length_exceeded", "completion tokens fit"),
    ],
)
def test_errors_show_the_openai_message_and_code(
    tab: Tab, server: Served, setup: dict[str, str], status: str, code: str, message: str
) -> None:
    tab.open(server.base_url)
    for selector, value in setup.items():
        tab.page.fill(selector, value)
    answer = finished(ask(tab.page, "Hello?"), "error")
    error = answer.locator(".error")
    expect(error).to_be_visible()
    expect(error.locator(".code")).to_have_text(code)
    expect(error.locator(".message-text")).to_contain_text(message)
    expect(error).to_contain_text(status)
    response = tab.api_requests("/v1/chat/completions")[-1].response()
    assert response is not None  # the id in the error body is the one in the response's X-Request-Id header
    expect(error.locator(".request-id")).to_have_text(f" · request {response.headers['x-request-id']}")
    # the failed turn is not part of the conversation: it goes back to the composer for a retry
    expect(tab.page.locator("article.user")).to_have_class("message user dropped")
    expect(tab.page.locator("#prompt")).to_have_value("Hello?")


def test_an_error_mid_stream_is_shown_after_the_partial_answer(tab: Tab, server: Served) -> None:
    server.engine.script = ["one ", "two ", "three ", "four"]
    server.engine.fail_with = EngineError("the engine failed while generating")
    server.engine.fail_after = 2
    tab.open(server.base_url)
    answer = finished(ask(tab.page, "Count."), "error")
    expect(answer.locator(".text")).to_have_text("one two ")
    expect(answer.locator(".error .code")).to_have_text("engine_error")
    expect(answer.locator(".error .message-text")).to_have_text("the engine failed while generating")
    expect(answer.locator(".error .http")).to_have_count(0)  # the stream's 200 is not the error's status


# --- grounding -----------------------------------------------------------------------------------------------------

GROUNDED = [
    "The cat:\n```json\n",
    '[{"bbox_2d": [100, 200, 500, 600], "label": "cat"},\n',
    ' {"point_2d": [800, 300], "label": "nose"}]\n',
    "```",
]


def _rect(locator: Locator) -> dict[str, float]:
    box = locator.bounding_box()
    assert box is not None
    return box


def test_grounding_box_and_point_are_drawn_at_the_right_pixels(tab: Tab, server: Served) -> None:
    width, height = 1280, 960  # shown at most 380 px high: the marks must follow the scaling
    server.engine.script = GROUNDED
    tab.open(server.base_url)
    attach(tab.page, ("cat.png", "image/png", png(width, height)))
    answer = finished(ask(tab.page, "Locate the cat and its nose, as JSON."))
    figure = answer.locator("figure.grounding")
    expect(figure).to_be_visible()
    expect(figure.locator("figcaption")).to_have_text("1 box, 1 point on cat.png (1280×960)")

    expected = parse_grounding("".join(GROUNDED), width, height)  # the Python client's conversion
    assert expected == [Box("cat", 128, 192, 640, 576), Point("nose", 1024, 288)]
    box, point = expected
    assert isinstance(box, Box) and isinstance(point, Point)
    image = _rect(figure.locator(".stage img"))
    scale = image["width"] / width
    assert scale < 1 and abs(image["height"] / height - scale) < 1e-3  # scaled down, aspect kept
    drawn = _rect(figure.locator(".box"))
    for got, want in [
        (drawn["x"] - image["x"], box.x1 * scale),
        (drawn["y"] - image["y"], box.y1 * scale),
        (drawn["width"], box.width * scale),
        (drawn["height"], box.height * scale),
    ]:
        assert abs(got - want) <= 1, (drawn, image, box)
    dot = _rect(figure.locator(".point .dot"))
    assert abs(dot["x"] + dot["width"] / 2 - image["x"] - point.x * scale) <= 1
    assert abs(dot["y"] + dot["height"] / 2 - image["y"] - point.y * scale) <= 1
    expect(figure.locator(".box .tag")).to_have_text("cat")
    expect(figure.locator(".box .tag")).to_be_visible()
    expect(figure.locator(".point .tag")).to_have_text("nose")

    # and on screen: the outline has the box colour at its edges, the picture shows through inside
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=ARTIFACTS / "playground-grounding.png")
    shot = Image.open(io.BytesIO(tab.page.screenshot())).convert("RGB")
    left, top = round(drawn["x"]), round(drawn["y"])
    right, bottom = round(drawn["x"] + drawn["width"]) - 1, round(drawn["y"] + drawn["height"]) - 1
    middle_x, middle_y = round(drawn["x"] + drawn["width"] / 2), round(drawn["y"] + drawn["height"] / 2)
    box_red = (230, 25, 75)  # the first mark's colour, #e6194b
    for x, y in [(left, middle_y), (right, middle_y), (middle_x, top), (middle_x, bottom)]:
        assert _close(shot.getpixel((x, y)), box_red), (x, y, shot.getpixel((x, y)))
    assert _close(shot.getpixel((left + 20, middle_y)), IMAGE_COLOR)
    assert _close(shot.getpixel((left - 3, middle_y)), IMAGE_COLOR)
    tab.assert_clean()


def _close(got: Any, want: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


# --- Stop ----------------------------------------------------------------------------------------------------------


def test_stop_closes_the_stream_and_the_server_cancels_the_request(tab: Tab, server: Served) -> None:
    server.engine.script = [f"t{i} " for i in range(200)]
    server.engine.delay_s = 0.1
    tab.open(server.base_url)
    answer = ask(tab.page, "Talk for a long time.")
    expect(answer.locator(".text")).to_contain_text("t2 ")
    assert server.engine.in_flight == 1
    assert server.metric("qwen3vl_requests_running") == 1
    expect(tab.page.locator("#stop")).to_be_enabled()
    tab.page.click("#stop")
    finished(answer, "stopped")
    wait_until(lambda: server.engine.in_flight == 0, what="the engine request to end")
    wait_until(lambda: server.metric("qwen3vl_requests_running") == 0, what="admission to release the request")
    shown = answer.locator(".text").text_content() or ""
    assert shown.startswith("t0 t1 t2 ") and len(shown.split()) < 200
    time.sleep(0.3)
    assert answer.locator(".text").text_content() == shown  # nothing more arrives
    expect(answer.locator(".finish")).to_have_text("stopped")
    expect(tab.page.locator("#send")).to_be_enabled()
    expect(tab.page.locator("#stop")).to_be_disabled()
    # the partial answer stays in the conversation: the next turn carries it
    server.engine.delay_s = 0.0
    finished(ask(tab.page, "Go on."))
    assert chat_bodies(tab)[-1]["messages"][1] == {"role": "assistant", "content": shown}


# --- multi-turn ----------------------------------------------------------------------------------------------------


def test_multi_turn_sends_the_history_and_grounds_on_the_last_image(tab: Tab, server: Served) -> None:
    tab.open(server.base_url)
    attach(tab.page, ("wide.png", "image/png", png(400, 100)), ("tall.png", "image/png", png(100, 400)))
    first = finished(ask(tab.page, "Compare them."))
    expect(first.locator(".text")).to_have_text("Hello, world!")
    expect(first.locator("figure.grounding")).to_be_hidden()  # no coordinates in that answer

    server.engine.script = ['{"bbox_2d": [0, 0, 500, 250], "label": "top"}']
    second = finished(ask(tab.page, "Box the top quarter."))
    first_body, second_body = chat_bodies(tab)
    assert second_body["messages"][:2] == [first_body["messages"][0], {"role": "assistant", "content": "Hello, world!"}]
    assert second_body["messages"][2] == {"role": "user", "content": "Box the top quarter."}
    rendered = server.engine.rendered[-1]  # what the engine's chat template received
    assert [m["role"] for m in rendered] == ["user", "assistant", "user"]
    assert len(server.engine.requests[-1].images) == 2  # the history's images go with it

    # the turn that asked has no image: the boxes refer to the last image of the nearest turn with one (tall.png)
    figure = second.locator("figure.grounding")
    expect(figure.locator("figcaption")).to_contain_text("tall.png (100×400)")
    image, drawn = _rect(figure.locator(".stage img")), _rect(figure.locator(".box"))
    scale = image["width"] / 100
    assert abs(drawn["width"] - 50 * scale) <= 1 and abs(drawn["height"] - 100 * scale) <= 1

    tab.page.click("#new-chat")
    expect(tab.page.locator("article")).to_have_count(0)
    finished(ask(tab.page, "Fresh start."))
    assert chat_bodies(tab)[-1]["messages"] == [{"role": "user", "content": "Fresh start."}]
    tab.assert_clean()


def test_reasoning_is_shown_apart_from_the_answer(tab: Tab, server: Served) -> None:
    from server.engine.base import ChoiceDelta

    server.engine.script = ["Let me look.", " It is blue.", "Blue."]
    server.engine.script_parts = [
        ChoiceDelta(index=0, text="", token_ids=(), reasoning="Let me look."),
        ChoiceDelta(index=0, text="", token_ids=(), reasoning=" It is blue."),
        ChoiceDelta(index=0, text="", token_ids=(), content="Blue."),
    ]
    tab.open(server.base_url)
    answer = finished(ask(tab.page, "Which colour?"))
    expect(answer.locator(".text")).to_have_text("Blue.")
    reasoning = answer.locator("details.reasoning")
    expect(reasoning).to_be_visible()
    expect(reasoning.locator(".reasoning-text")).to_be_hidden()  # folded until asked
    reasoning.locator("summary").click()
    expect(reasoning.locator(".reasoning-text")).to_have_text("Let me look. It is blue.")
    # the history carries the answer, not the reasoning
    finished(ask(tab.page, "Sure?"))
    assert chat_bodies(tab)[-1]["messages"][1] == {"role": "assistant", "content": "Blue."}


# --- API key -------------------------------------------------------------------------------------------------------


def test_api_key_is_sent_as_bearer_kept_in_the_tab_only_and_a_wrong_key_is_shown(tab: Tab) -> None:
    with serve(playground_settings(api_keys=["sk-right"]), VisualFakeEngine()) as keyed:
        tab.open(keyed.base_url)  # the page and its assets load without a key
        expect(tab.page.locator("#status")).to_contain_text("needs an API key")
        assert keyed.base_url + "/v1/models" in tab.bad_status[0]  # the model list was refused (401)

        tab.page.fill("#model", MODEL)  # not listed without a key: typed in
        tab.page.fill("#api-key", "sk-wrong")
        answer = finished(ask(tab.page, "Hi"), "error")
        expect(answer.locator(".error .code")).to_have_text("invalid_api_key")
        expect(answer.locator(".error .message-text")).to_have_text(
            "a valid API key is required (Authorization: Bearer <key>)"
        )
        expect(answer.locator(".error")).to_contain_text("HTTP 401")
        assert tab.api_requests("/v1/chat/completions")[-1].headers["authorization"] == "Bearer sk-wrong"

        tab.page.fill("#api-key", "sk-right")
        tab.page.locator("#api-key").dispatch_event("change")  # the model list reloads with the key
        expect(tab.page.locator("#status")).to_have_attribute("data-kind", "ok")
        answer = finished(ask(tab.page, "Hi"))  # the failed turn came back to the composer; resent
        assert tab.api_requests("/v1/chat/completions")[-1].headers["authorization"] == "Bearer sk-right"
        assert len(keyed.engine.requests) == 1

        # nowhere beyond the page: no cookies, no localStorage; sessionStorage only when asked to keep it
        page = tab.page
        assert page.context.cookies() == []
        assert page.evaluate("localStorage.length") == 0
        assert page.evaluate("sessionStorage.length") == 0
        page.check("#remember-key")
        assert page.evaluate("Object.values(sessionStorage)") == ["sk-right"]
        page.reload()
        expect(page.locator("#api-key")).to_have_value("sk-right")
        expect(page.locator("#status")).to_have_attribute("data-kind", "ok")
        page.uncheck("#remember-key")
        assert page.evaluate("sessionStorage.length") == 0
        assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []


# --- security headers ----------------------------------------------------------------------------------------------


class _Markup(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        self.inline += [f"{tag}[{name}]" for name, _ in attrs if name == "style" or name.startswith("on")]

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.inline.append("script body")


def test_strict_csp_on_every_asset_and_no_inline_script_or_style(tab: Tab, server: Served) -> None:
    for path, (_, media_type) in ASSETS.items():
        response = httpx.get(server.base_url + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == media_type
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "connect-src 'self';" in CONTENT_SECURITY_POLICY
    markup = _Markup()
    markup.feed(httpx.get(server.base_url + "/").text)
    assert markup.scripts == [{"type": "module", "src": "/playground/playground.js"}]
    assert markup.inline == []
    assert httpx.get(server.base_url + "/playground/nothing.js").status_code == 404

    # the browser enforces it: an injected inline script does not run, and a violation is reported
    tab.open(server.base_url)
    page = tab.page
    assert page.locator("script:not([src])").count() == 0
    ran = page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation", (e) => resolve(e.violatedDirective), {once: true});
            const script = document.createElement("script");
            script.textContent = "window.__inlineRan = true";
            document.body.append(script);
            setTimeout(() => resolve(window.__inlineRan ? "ran" : "no report"), 2000);
        })"""
    )
    assert ran == "script-src-elem"
    assert page.evaluate("window.__inlineRan") is None
    assert any("Content Security Policy" in line for line in tab.console_errors)
