"""Typed helpers and examples for talking to the server with the openai SDK and curl (never imports server).

``clients.messages`` builds multimodal chat messages (from ``clients.media``: local media as data URLs, and
``clients.controls``: the per-item Qwen controls), ``clients.grounding`` parses Qwen3-VL's boxes and points, and
``clients.chat_cli`` is the ``qwen3vl-chat`` command (it needs the ``openai`` package; the rest does not).
"""

from clients.grounding import Box, Point, draw, parse_boxes, parse_grounding, parse_points, to_pixels
from clients.messages import (
    Conversation,
    ImageControls,
    Message,
    Part,
    VideoControls,
    assistant_message,
    data_url,
    encode_mp4,
    image_part,
    media_kind,
    sniff_mime,
    system_message,
    text_part,
    user_message,
    video_part,
)

__all__ = [
    "Box",
    "Conversation",
    "ImageControls",
    "Message",
    "Part",
    "Point",
    "VideoControls",
    "assistant_message",
    "data_url",
    "draw",
    "encode_mp4",
    "image_part",
    "media_kind",
    "parse_boxes",
    "parse_grounding",
    "parse_points",
    "sniff_mime",
    "system_message",
    "text_part",
    "to_pixels",
    "user_message",
    "video_part",
]
