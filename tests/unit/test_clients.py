"""clients/ without a server: data URLs and MIME sniffing, where controls go, history, grounding maths and drawing."""

from __future__ import annotations

import base64
import io
import json
import math
import socket
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from openai.types import CompletionUsage
from PIL import Image

from clients.chat_cli import format_usage, main, media_parts
from clients.grounding import Box, Point, draw, parse_boxes, parse_grounding, parse_points, to_pixels
from clients.messages import (
    Conversation,
    ImageControls,
    VideoControls,
    data_url,
    encode_mp4,
    image_part,
    media_kind,
    sniff_mime,
    text_part,
    user_message,
    video_part,
)
from tests.media_factory import image_bytes, mp4_bytes


def decode(url: str) -> tuple[str, bytes]:
    head, _, payload = url.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head
    return head[5:-7], base64.b64decode(payload, validate=True)


def pil(url: str) -> Image.Image:
    return Image.open(io.BytesIO(decode(url)[1]))


# --- data URLs and MIME sniffing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (image_bytes(fmt="PNG"), "image/png"),
        (image_bytes(fmt="JPEG"), "image/jpeg"),
        (image_bytes(fmt="GIF"), "image/gif"),
        (image_bytes(fmt="WEBP"), "image/webp"),
        (image_bytes(fmt="BMP"), "image/bmp"),
        (mp4_bytes(frames=2), "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\x82\x84webm", "video/webm"),
        (b"\x1a\x45\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\x82\x88matroska", "video/x-matroska"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "video/x-msvideo"),
    ],
)
def test_sniff_mime_from_magic_bytes(data: bytes, mime: str) -> None:
    assert sniff_mime(data) == mime
    assert sniff_mime(data, "misleading.txt") == mime  # the bytes win over the name


def test_sniff_mime_falls_back_to_the_extension() -> None:
    assert sniff_mime(b"????", "clip.webm") == "video/webm"
    assert sniff_mime(b"????", "photo.jpg") == "image/jpeg"
    assert sniff_mime(b"????") == "application/octet-stream"


def test_data_url_round_trips_the_bytes() -> None:
    data = image_bytes(fmt="JPEG")
    assert decode(data_url(data)) == ("image/jpeg", data)
    assert decode(data_url(b"abc", "text/plain")) == ("text/plain", b"abc")


def test_image_part_from_a_file_inlines_its_bytes(tmp_path: Path) -> None:
    data = image_bytes(fmt="PNG")
    (tmp_path / "a.jpg").write_bytes(data)  # a PNG under a .jpg name: sniffed as PNG
    for src in (tmp_path / "a.jpg", str(tmp_path / "a.jpg")):
        part = image_part(src)
        assert part == {"type": "image_url", "image_url": {"url": part["image_url"]["url"]}}
        assert decode(part["image_url"]["url"]) == ("image/png", data)
    assert decode(image_part(data)["image_url"]["url"]) == ("image/png", data)
    with pytest.raises(FileNotFoundError):
        image_part(tmp_path / "missing.png")


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/cat.jpg?x=1",
        "http://h/a.png",
        "HTTPS://E.COM/A",
        "data:image/png;base64,AAAA",
        "file:///m/a.png",
    ],
)
def test_urls_pass_through(url: str) -> None:
    assert image_part(url)["image_url"]["url"] == url
    assert video_part(url)["video_url"]["url"] == url


def test_pil_images_and_arrays_are_encoded_losslessly_by_default() -> None:
    array = np.random.default_rng(3).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    for src in (Image.fromarray(array), array):
        url = image_part(src)["image_url"]["url"]
        assert decode(url)[0] == "image/png"
        assert np.array_equal(np.asarray(pil(url)), array)
    rgba = Image.new("RGBA", (8, 6), (10, 20, 30, 128))
    jpeg = image_part(rgba, image_format="JPEG")["image_url"]["url"]
    assert decode(jpeg)[0] == "image/jpeg"
    assert pil(jpeg).mode == "RGB" and pil(jpeg).size == (8, 6)
    assert pil(image_part(rgba)["image_url"]["url"]).mode == "RGBA"
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        image_part(np.zeros((4, 4), np.uint8))


# --- where the controls go ---------------------------------------------------------------------------------------


def test_image_controls_go_on_the_image_url_object_and_unset_ones_are_left_out() -> None:
    part = image_part("https://e.com/a.png", max_pixels=65536, min_pixels=1024, detail="low")
    assert part == {
        "type": "image_url",
        "image_url": {"url": "https://e.com/a.png", "min_pixels": 1024, "max_pixels": 65536, "detail": "low"},
    }
    resized = image_part("https://e.com/a.png", resized_height=280, resized_width=420)
    assert resized["image_url"] == {"url": "https://e.com/a.png", "resized_height": 280, "resized_width": 420}


def test_video_controls_go_on_the_video_url_object(tmp_path: Path) -> None:
    clip = mp4_bytes(frames=4)
    (tmp_path / "clip.mp4").write_bytes(clip)
    part = video_part(
        tmp_path / "clip.mp4", fps=1.5, max_frames=8, min_pixels=1024, max_pixels=4096, total_pixels=10**5
    )
    inner = part.pop("video_url")
    assert part == {"type": "video_url"}
    assert decode(inner.pop("url")) == ("video/mp4", clip)
    assert inner == {"fps": 1.5, "max_frames": 8, "min_pixels": 1024, "max_pixels": 4096, "total_pixels": 10**5}
    assert video_part(clip, nframes=6, min_frames=2)["video_url"]["nframes"] == 6
    with pytest.raises(ValueError, match="sample_fps"):
        video_part(clip, sample_fps=2)


def test_frames_become_a_qwen_frame_list_with_the_controls_on_the_part() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 16, 24, 3), dtype=np.uint8)
    part = video_part(frames, sample_fps=4, max_pixels=4096, resized_height=32, resized_width=32)
    urls = part.pop("video")
    assert part == {"type": "video", "sample_fps": 4.0, "max_pixels": 4096, "resized_height": 32, "resized_width": 32}
    assert len(urls) == 3
    assert all(decode(u)[0] == "image/jpeg" and pil(u).size == (24, 16) for u in urls)
    # Default rate: Qwen's 2 fps; frames of any image kind; PNG keeps them exact.
    mixed = [Image.fromarray(frames[0]), frames[1], "https://e.com/f.png"]
    part = video_part(mixed, frame_format="PNG")
    assert part["sample_fps"] == 2.0
    assert np.array_equal(np.asarray(pil(part["video"][1])), frames[1])
    assert part["video"][2] == "https://e.com/f.png"


@pytest.mark.parametrize(
    ("src", "kwargs", "message"),
    [
        (np.zeros((2, 8, 8, 3), np.uint8), {"fps": 1.0}, "frames are sent as they are"),
        (np.zeros((2, 8, 8, 3), np.uint8), {"nframes": 2}, "frames are sent as they are"),
        (np.zeros((2, 8, 8, 3), np.uint8), {"sample_fps": 0}, "sample_fps"),
        (np.zeros((8, 8, 3), np.uint8), {}, "TxHxWx3"),
        ([], {}, "at least one frame"),
        ([np.zeros((8, 8), np.uint8)], {}, "HxWx3"),
        ("https://e.com/v.mp4", {"fps": 2.0, "nframes": 4}, "either fps or nframes"),
        ("https://e.com/v.mp4", {"resized_height": 64}, "go together"),
        ("https://e.com/v.mp4", {"max_pixels": -1}, "positive"),
        ("https://e.com/v.mp4", {"min_frames": 8, "max_frames": 4}, "min_frames"),
    ],
)
def test_video_part_refuses_what_the_server_would_not_apply(src: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        video_part(src, **kwargs)


def test_controls_validate() -> None:
    with pytest.raises(ValueError, match="min_pixels"):
        ImageControls(min_pixels=10, max_pixels=5)
    with pytest.raises(ValueError, match="positive"):
        ImageControls(max_pixels=True)
    with pytest.raises(ValueError, match="detail"):
        ImageControls(detail="medium")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        VideoControls(fps=math.inf)
    assert ImageControls().as_dict() == {}
    assert VideoControls(fps=2.0).samples and not VideoControls(max_pixels=4).samples


def test_encode_mp4_writes_a_decodable_h264_clip() -> None:
    frames = np.random.default_rng(1).integers(0, 256, size=(5, 33, 31, 3), dtype=np.uint8)
    data = encode_mp4(frames, fps=5)
    assert sniff_mime(data) == "video/mp4"
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(stream.average_rate or 0) == pytest.approx(5)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 5
    assert decoded[0].shape == (32, 30, 3)  # yuv420p: even sides
    with pytest.raises(ValueError, match="same size"):
        encode_mp4([np.zeros((8, 8, 3), np.uint8), np.zeros((10, 8, 3), np.uint8)])


@pytest.mark.parametrize(
    ("src", "kind"),
    [
        ("clip.mp4", "video"),
        ("a/b/CLIP.MOV", "video"),
        ("x.webm", "video"),
        ("x.mkv", "video"),
        ("x.avi", "video"),
        ("https://e.com/v.mp4?sig=abc#t=1", "video"),
        ("https://e.com/watch?v=x.png", "image"),
        ("data:video/mp4;base64,AAAA", "video"),
        ("data:image/png;base64,AAAA", "image"),
        ("photo.jpeg", "image"),
        ("noext", "image"),
    ],
)
def test_media_kind_by_extension_and_mime(src: str, kind: str) -> None:
    assert media_kind(src) == kind


def test_media_kind_sniffs_extensionless_files(tmp_path: Path) -> None:
    (tmp_path / "clip").write_bytes(mp4_bytes(frames=2))
    (tmp_path / "pic").write_bytes(image_bytes())
    assert media_kind(tmp_path / "clip") == "video"
    assert media_kind(tmp_path / "pic") == "image"


# --- messages and history ----------------------------------------------------------------------------------------


def test_user_message_shapes() -> None:
    assert user_message("hi") == {"role": "user", "content": "hi"}
    image = image_part("https://e.com/a.png")
    assert user_message(image, "what?") == {"role": "user", "content": [image, text_part("what?")]}
    assert user_message("a", "b")["content"] == [text_part("a"), text_part("b")]
    with pytest.raises(ValueError, match="content"):
        user_message()


def test_conversation_keeps_the_turns_in_order() -> None:
    image = image_part("https://e.com/a.png")
    chat = Conversation(system="be brief").user(image, "what is it?")
    chat.assistant("a cat").user("what colour?")
    chat.assistant(None)
    assert chat.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [image, {"type": "text", "text": "what is it?"}]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "what colour?"},
        {"role": "assistant", "content": ""},
    ]
    assert len(chat) == 5
    chat.messages.clear()  # a copy: the history is untouched
    assert len(chat.messages) == 5
    assert Conversation().messages == []
    json.dumps(chat.messages)  # plain JSON, ready for any HTTP client


# --- grounding ---------------------------------------------------------------------------------------------------

FENCED = """Sure! Here they are:
```json
[
  {"bbox_2d": [100, 200, 500, 600], "label": "cat"},
  {"bbox_2d": [0, 0, 1000, 1000], "label": "frame"}
]
```
Anything else?"""


def test_fenced_json_list_to_pixels_of_the_original_image() -> None:
    assert parse_boxes(FENCED, 640, 480) == [Box("cat", 64, 96, 320, 288), Box("frame", 0, 0, 640, 480)]


def test_single_object_points_and_mixed_order() -> None:
    assert parse_boxes('{"bbox_2d": [250, 250, 750, 750]}', 200, 100) == [Box(None, 50, 25, 150, 75)]
    text = '[{"point_2d": [500, 500], "label": "nose"}, {"bbox_2d": [0, 0, 500, 500], "label": 7}]'
    assert parse_grounding(text, 100, 50) == [Point("nose", 50, 25), Box("7", 0, 0, 50, 25)]
    assert parse_points(text, 100, 50) == [Point("nose", 50, 25)]
    assert parse_boxes(text, 100, 50) == [Box("7", 0, 0, 50, 25)]


def test_rounding_clamping_and_swapped_corners() -> None:
    assert to_pixels(333, 100) == 33  # 33.3
    assert to_pixels(336, 100) == 34  # 33.6
    assert to_pixels(-50, 100) == 0
    assert to_pixels(1200, 100) == 100
    assert to_pixels(0.5, 640, scale=1) == 320
    text = '{"bbox_2d": [900, 1100, -20, 333.3], "label": "odd"}'
    assert parse_boxes(text, 300, 200) == [Box("odd", 0, 67, 270, 200)]
    assert parse_points('{"point_2d": [1001, -1]}', 64, 48) == [Point(None, 64, 0)]


def test_coordinates_beyond_the_float_range_never_raise() -> None:
    huge_int = "1" + "0" * 400  # a JSON integer too large for a float: not a coordinate
    assert parse_grounding('{"bbox_2d": [' + huge_int + ", 2, 3, 4]}", 640, 480) == []
    # finite, but x / 1000 * width overflows to infinity: clamped to the image like any coordinate past 1000
    assert parse_boxes('{"bbox_2d": [1.7e308, 2, 3, 4]}', 2000, 2000) == [Box(None, 6, 4, 2000, 8)]


def test_truncated_nested_and_python_ish_answers() -> None:
    truncated = '```json\n[{"bbox_2d": [10, 10, 20, 20], "label": "a"}, {"bbox_2d": [30, 30, 4'
    assert parse_boxes(truncated, 1000, 1000) == [Box("a", 10, 10, 20, 20)]
    wrapped = '{"objects": [{"bbox_2d": [1, 2, 3, 4], "label": {"x": 1}}], "note": "ok"}'
    assert parse_boxes(wrapped, 1000, 1000) == [Box(None, 1, 2, 3, 4)]
    assert parse_boxes("{'bbox_2d': [1, 2, 3, 4]}", 1000, 1000) == []  # not JSON: skipped, not raised


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no boxes here",
        "{",
        "}{][",
        "```json\n```",
        "[1, 2, 3]",
        '{"bbox_2d": [1, 2, 3]}',
        '{"bbox_2d": "10,20,30,40"}',
        '{"bbox_2d": [true, 2, 3, 4]}',
        '{"bbox_2d": [NaN, 2, 3, 4]}',
        '{"bbox_2d": [1, 2, 3, Infinity]}',
        '{"point_2d": [1, null]}',
        '{"point_2d": {"x": 1, "y": 2}}',
        "{" * 5000 + "}" * 10,
        "\x00\xff<|im_end|>",
    ],
)
def test_garbage_gives_nothing_and_never_raises(text: str) -> None:
    assert parse_grounding(text, 640, 480) == []


def test_parse_refuses_a_bad_image_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_grounding("[]", 0, 10)


def test_draw_outlines_boxes_and_dots_points_on_a_copy() -> None:
    image = Image.new("RGB", (100, 100), "white")
    boxes = parse_boxes('[{"bbox_2d": [100, 100, 500, 500], "label": "sq"}]', 100, 100)
    points = parse_points('{"point_2d": [800, 800]}', 100, 100)
    out = draw(image, boxes, points, line_width=2, radius=3)
    red, white = (255, 0, 0), (255, 255, 255)
    assert out.size == image.size and out is not image
    assert image.getpixel((10, 30)) == white  # the original is untouched
    for edge in [(10, 30), (11, 30), (49, 30), (50, 30), (30, 10), (30, 50)]:
        assert out.getpixel(edge) == red, edge
    for outside in [(30, 30), (9, 30), (51, 30), (30, 52), (60, 60), (95, 5)]:
        assert out.getpixel(outside) == white, outside
    assert out.getpixel((80, 80)) == red and out.getpixel((82, 80)) == red and out.getpixel((85, 85)) == white
    labelled = np.asarray(out)[13:25, 13:40]
    assert (labelled != 255).any()  # the label is written inside the box's top-left corner
    plain = draw(image, boxes, labels=False, line_width=2)
    assert (np.asarray(plain)[13:25, 13:40] == 255).all()
    grey = draw(Image.new("L", (10, 10), 0), [Box(None, 0, 0, 9, 9)], color="lime", line_width=1)
    assert grey.mode == "RGB" and grey.getpixel((0, 5)) == (0, 255, 0) and grey.getpixel((5, 5)) == (0, 0, 0)


# --- the CLI's pieces --------------------------------------------------------------------------------------------


def test_media_parts_classify_by_extension() -> None:
    parts = media_parts(["https://e.com/a.png", "https://e.com/b.webm", "data:video/mp4;base64,AA"], max_pixels=4096)
    assert [p["type"] for p in parts] == ["image_url", "video_url", "video_url"]
    assert all(p[p["type"]]["max_pixels"] == 4096 for p in parts)
    assert media_parts(["https://e.com/b.mp4"], fps=1.0)[0]["video_url"] == {"url": "https://e.com/b.mp4", "fps": 1.0}


def test_format_usage_reports_visual_tokens_when_present() -> None:
    usage = CompletionUsage.model_validate(
        {
            "prompt_tokens": 80,
            "completion_tokens": 4,
            "total_tokens": 84,
            "prompt_tokens_details": {"cached_tokens": 0, "image_tokens": 64, "video_tokens": 0},
        }
    )
    assert format_usage(usage) == (
        "usage: prompt_tokens=80 completion_tokens=4 total_tokens=84 image_tokens=64 video_tokens=0"
    )
    plain = CompletionUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert format_usage(plain) == "usage: prompt_tokens=3 completion_tokens=2 total_tokens=5"
    assert format_usage(None) == "usage: unavailable"


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["-p", "hi", "--url", url, "--model", "m"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Connection error.") and "Traceback" not in err
    assert main([str(tmp_path / "missing.png"), "-p", "hi", "--url", url, "--model", "m"]) == 2
    assert "missing.png" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["only-media.png"])  # no -p: argparse's usage error
    assert exit_info.value.code == 2
