"""Screenshots of the playground for the README (not a test; run by hand, see below).

    flock /tmp/qwen3vl-e2e.lock python -m tests.browser.screenshot            # docs/playground.png, the REAL tiny engine
    python -m tests.browser.screenshot --engine fake                          # docs/playground-grounding.png

``tiny`` serves the embedded random-weight demo checkpoint on the real vLLM engine (about a minute on a CPU; take the e2e
lock, real engines starve each other on two cores): the answer is gibberish, but everything around it is real (streaming,
usage with the image's tokens, the server's stage timings). ``fake`` scripts the fake engine with a grounding answer whose
boxes match the picture, to show them drawn.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw
from playwright.sync_api import expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, VisualFakeEngine, playground_settings, serve

DOCS = Path(__file__).resolve().parents[2] / "docs"
SIZE = (960, 640)
HOUSE = (560, 250, 860, 560)  # x1, y1, x2, y2 in pixels of the picture
SUN = (170, 140)


def scene() -> bytes:
    """A small picture with a house and a sun (flat colours: the PNG and the screenshot stay small)."""
    width, height = SIZE
    image = Image.new("RGB", SIZE, (150, 200, 240))
    pen = ImageDraw.Draw(image)
    pen.rectangle((0, 470, width, height), fill=(110, 170, 90))
    pen.ellipse((SUN[0] - 60, SUN[1] - 60, SUN[0] + 60, SUN[1] + 60), fill=(250, 210, 70))
    x1, y1, x2, y2 = HOUSE
    pen.rectangle((x1 + 20, y1 + 110, x2 - 20, y2), fill=(200, 120, 90))
    pen.polygon([(x1, y1 + 115), ((x1 + x2) // 2, y1), (x2, y1 + 115)], fill=(130, 60, 50))
    pen.rectangle((x1 + 120, y2 - 110, x1 + 180, y2), fill=(90, 60, 40))
    pen.rectangle((x1 + 50, y1 + 150, x1 + 100, y1 + 200), fill=(230, 240, 250))
    pen.rectangle((x2 - 100, y1 + 150, x2 - 50, y1 + 200), fill=(230, 240, 250))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _relative(value: int, size: int) -> int:
    return round(value / size * 1000)


def grounding_answer() -> list[str]:
    w, h = SIZE
    box = [_relative(HOUSE[0], w), _relative(HOUSE[1], h), _relative(HOUSE[2], w), _relative(HOUSE[3], h)]
    point = [_relative(SUN[0], w), _relative(SUN[1], h)]
    return [
        "Here",
        " they",
        " are:\n```json\n[\n",
        f'  {{"bbox_2d": {box}, "label": "house"}},\n',
        f'  {{"point_2d": {point}, "label": "sun"}}\n',
        "]\n```",
    ]


@contextlib.contextmanager
def _server(engine: str) -> Iterator[str]:
    if engine == "tiny":
        from tests.e2e.conftest import live_server

        with live_server(moe=False) as live:
            yield live.base_url
    else:
        fake = VisualFakeEngine(script=grounding_answer(), delay_s=0.02)
        with serve(playground_settings(), fake) as served:
            yield served.base_url


def capture(engine: str, out: Path) -> None:
    question = "What is in this image? Locate the house and the sun; answer as JSON with bbox_2d / point_2d and label."
    with _server(engine) as base_url, sync_playwright() as playwright, tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / "house.png"
        picture.write_bytes(scene())
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # tall enough for the whole exchange: the grounding answer carries a picture
        page = browser.new_page(viewport={"width": 1280, "height": 1060 if engine == "fake" else 720})
        page.goto(f"{base_url}/")
        expect(page.locator("#status")).to_have_attribute("data-kind", "ok")
        page.set_input_files("#files", str(picture))
        expect(page.locator(".attachment")).to_have_count(1)
        page.fill("#max_tokens", "48")
        page.fill("#prompt", question)
        page.click("#send")
        answer = page.locator("article.assistant").last
        expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
        page.locator("#prompt").blur()
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=out)
        browser.close()
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["tiny", "fake"], default="tiny")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    default = DOCS / ("playground.png" if args.engine == "tiny" else "playground-grounding.png")
    capture(args.engine, args.out or default)


if __name__ == "__main__":
    main()
