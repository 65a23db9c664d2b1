"""Parse Qwen3-VL grounding answers and map them onto the original image.

Asked to locate things, Qwen3-VL answers with JSON — often inside a ```json fence, a list or a single object — such as
``[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}, {"point_2d": [x, y], "label": "nose"}]``, coordinates relative on a
0–1000 scale whatever the image's size. ``x_px = x / 1000 * width``, ``y_px = y / 1000 * height``, rounded and clamped
to the image.

Parsing never raises on model text: anything that is not a well-formed box or point is skipped, and a truncated answer
still yields the objects completed before the cut.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

__all__ = ["SCALE", "Box", "Point", "draw", "parse_boxes", "parse_grounding", "parse_points", "to_pixels"]

SCALE = 1000
"""Qwen3-VL's relative coordinate range."""


@dataclass(frozen=True)
class Box:
    """A box in pixels of the original image: (x1, y1) top-left, (x2, y2) bottom-right, ``0 ≤ x ≤ width``."""

    label: str | None
    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(x1, y1, x2, y2)``, as ``PIL.Image.crop`` takes it."""
        return self.x1, self.y1, self.x2, self.y2


@dataclass(frozen=True)
class Point:
    """A point in pixels of the original image."""

    label: str | None
    x: int
    y: int


def to_pixels(value: float, size: int, scale: float = SCALE) -> int:
    """One relative coordinate (0…``scale``) to pixels of a side of ``size`` pixels, rounded and clamped to [0, size].

    Clamped before rounding (the same result, as the bounds are whole numbers), so a huge coordinate cannot overflow."""
    return round(min(max(value / scale * size, 0), size))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond the float range
        return None
    return number if math.isfinite(number) else None


def _coords(value: object, count: int) -> list[float] | None:
    if not isinstance(value, list | tuple) or len(value) != count:
        return None
    numbers = [_number(v) for v in value]
    return None if any(n is None for n in numbers) else [n for n in numbers if n is not None]


def _label(item: dict[str, Any]) -> str | None:
    label = item.get("label")
    if label is None or isinstance(label, dict | list):
        return None
    return str(label)


def _objects(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``text`` that carries ``bbox_2d`` or ``point_2d``, in order, wherever it sits (fences,
    lists, prose around, a list cut short by the token limit)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            value, end = None, start + 1
        if isinstance(value, dict) and ("bbox_2d" in value or "point_2d" in value):
            yield value
        else:
            end = start + 1  # look inside: the object may wrap the ones we want
        start = text.find("{", end)


def _item(item: dict[str, Any], width: int, height: int, scale: float) -> Box | Point | None:
    label = _label(item)
    box = _coords(item.get("bbox_2d"), 4)
    if box is not None:
        x1, y1, x2, y2 = box
        xs = sorted((to_pixels(x1, width, scale), to_pixels(x2, width, scale)))
        ys = sorted((to_pixels(y1, height, scale), to_pixels(y2, height, scale)))
        return Box(label, xs[0], ys[0], xs[1], ys[1])
    point = _coords(item.get("point_2d"), 2)
    if point is not None:
        return Point(label, to_pixels(point[0], width, scale), to_pixels(point[1], height, scale))
    return None


def parse_grounding(text: str, width: int, height: int, *, scale: float = SCALE) -> list[Box | Point]:
    """Boxes and points in ``text``, in order, in pixels of the original ``width`` × ``height`` image. Never raises on
    model text (garbage gives ``[]``)."""
    if width <= 0 or height <= 0 or scale <= 0:
        raise ValueError("width, height and scale must be positive")
    if not isinstance(text, str):
        return []
    found = (_item(item, width, height, scale) for item in _objects(text))
    return [item for item in found if item is not None]


def parse_boxes(text: str, width: int, height: int, *, scale: float = SCALE) -> list[Box]:
    return [item for item in parse_grounding(text, width, height, scale=scale) if isinstance(item, Box)]


def parse_points(text: str, width: int, height: int, *, scale: float = SCALE) -> list[Point]:
    return [item for item in parse_grounding(text, width, height, scale=scale) if isinstance(item, Point)]


def draw(
    image: Image.Image,
    boxes: Iterable[Box] = (),
    points: Iterable[Point] = (),
    *,
    color: str | tuple[int, int, int] = (255, 0, 0),
    line_width: int = 3,
    radius: int = 5,
    labels: bool = True,
) -> Image.Image:
    """A copy of ``image`` (RGB) with the boxes outlined, the points as filled dots, and their labels."""
    out = image.convert("RGB")  # always a copy
    pen = ImageDraw.Draw(out)
    for box in boxes:
        pen.rectangle(box.as_tuple(), outline=color, width=line_width)
        if labels and box.label:
            pen.text((box.x1 + line_width + 1, box.y1 + line_width + 1), box.label, fill=color)
    for point in points:
        pen.ellipse((point.x - radius, point.y - radius, point.x + radius, point.y + radius), fill=color)
        if labels and point.label:
            pen.text((point.x + radius + 2, point.y - radius), point.label, fill=color)
    return out
