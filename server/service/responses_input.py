"""A Responses API request as the chat request every generation here runs on.

``input`` items become chat messages (``instructions`` a system message first); ``function_call`` items become an
assistant turn's tool calls and ``function_call_output`` items tool messages (images and videos in them too);
``reasoning`` items are left out, as Qwen's chat template drops earlier reasoning. Tools, ``tool_choice`` and
``text.format`` take chat's shapes. A refusal names the ``input[i]`` (or ``tools[j]``, ``text.format``) location.

The video part is this server's extension, in the spirit of ``input_image``:
``{"type": "input_video", "video_url": "https://.../clip.mp4"}`` (a URL or a ``data:`` URL), with the same optional
controls as chat's ``video_url`` part (``fps``, ``max_pixels``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.errors import InvalidRequestError
from server.schemas.responses import ResponsesRequest

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_VIDEO_CONTROLS = ("fps", "nframes", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels")
_IMAGE_CONTROLS = ("min_pixels", "max_pixels", "resized_height", "resized_width")


@dataclass
class ChatBody:
    """The chat request's JSON, and per chat message the request location it came from (``input[2]``...)."""

    body: dict[str, Any]
    origins: list[str] = field(default_factory=list)

    def add(self, message: dict[str, Any], origin: str) -> None:
        self.body["messages"].append(message)
        self.origins.append(origin)


def input_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message), as a stored response keeps it."""
    if isinstance(req.input, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": req.input}]}]
    return req.input


def chat_body(req: ResponsesRequest, history: list[dict[str, Any]] | None = None) -> ChatBody:
    """``history``: the stored conversation ``previous_response_id`` continues (its turns' input and output items);
    the earlier ``instructions`` are not carried over, as in OpenAI's API."""
    out = ChatBody({"model": req.model, "messages": []})
    if req.instructions:
        out.add({"role": "system", "content": req.instructions}, "instructions")
    for item in history or ():
        _add_item(out, item, "previous_response_id")
    if isinstance(req.input, str):
        out.add({"role": "user", "content": req.input}, "input")
    else:
        for i, item in enumerate(req.input):
            _add_item(out, item, f"input[{i}]")
    body = out.body
    sampling = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,
        "min_p": req.min_p,
        "repetition_penalty": req.repetition_penalty,
        "seed": req.seed,
        "max_completion_tokens": req.max_output_tokens,
        "user": req.user,
    }
    body.update({key: value for key, value in sampling.items() if value is not None})
    if req.tools:
        body["tools"] = [_tool(tool, f"tools[{j}]") for j, tool in enumerate(req.tools)]
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    if req.text and req.text.get("format") is not None:
        fmt = _text_format(req.text["format"])
        if fmt is not None:
            body["response_format"] = fmt
    if req.reasoning and req.reasoning.get("effort") == "none":
        body["chat_template_kwargs"] = {"enable_thinking": False}  # Thinking checkpoints answer without reasoning
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return out


def _add_item(out: ChatBody, item: Mapping[str, Any], where: str) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise _bad(f"{where}.role", f"must be one of {', '.join(_MESSAGE_ROLES)}")
        out.add({"role": role, "content": _content(item.get("content"), f"{where}.content")}, where)
    elif kind == "function_call":
        call = {
            "id": _text(item, "call_id", where),
            "type": "function",
            "function": {"name": _text(item, "name", where), "arguments": _text(item, "arguments", where)},
        }
        last = out.body["messages"][-1] if out.body["messages"] else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)  # calls of one turn, one after another
        else:
            out.add({"role": "assistant", "content": None, "tool_calls": [call]}, where)
    elif kind == "function_call_output":
        output = item.get("output")
        content = output if isinstance(output, str) else _content(output, f"{where}.output")
        out.add({"role": "tool", "tool_call_id": _text(item, "call_id", where), "content": content}, where)
    elif kind != "reasoning":
        raise _bad(f"{where}.type", f"input items of type {str(kind)[:64]!r} are not supported")


def _content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise _bad(where, "must be a string or a non-empty list of parts")
    return [_part(part, f"{where}[{k}]") for k, part in enumerate(content)]


def _part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise _bad(where, "must be an object")
    kind = part.get("type")
    if kind in _TEXT_PARTS or kind == "refusal":
        return {"type": "text", "text": _text(part, "refusal" if kind == "refusal" else "text", where)}
    if kind == "input_image":
        if part.get("file_id") is not None:
            raise _bad(f"{where}.file_id", "uploaded files are not supported; send image_url (a URL or a data URL)")
        image = {"url": _text(part, "image_url", where)}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image, **_controls(part, _IMAGE_CONTROLS)}
    if kind == "input_video":
        return {
            "type": "video_url",
            "video_url": {"url": _text(part, "video_url", where)},
            **_controls(part, _VIDEO_CONTROLS),
        }
    raise _bad(f"{where}.type", f"parts of type {str(kind)[:64]!r} are not supported")


def _controls(part: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: part[name] for name in names if part.get(name) is not None}


def _tool(tool: Mapping[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise _bad(f"{where}.type", "only function tools are supported")
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | Mapping[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice", 'must be none, auto, required or {"type": "function", "name": ...}')


def _text_format(fmt: Any) -> dict[str, Any] | None:
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        inner = {key: fmt[key] for key in ("name", "schema", "strict", "description") if fmt.get(key) is not None}
        return {"type": "json_schema", "json_schema": inner}
    raise _bad("text.format.type", "must be text, json_object or json_schema")


def _text(item: Mapping[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise _bad(f"{where}.{name}", "must be a string")
    return value


def _bad(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param, code="invalid_value")


def chat_param(param: str | None, origins: list[str]) -> str | None:
    """A chat request location (``messages[3].content[1]...``) as the Responses request's (``input[2].content[1]...``)."""
    if param == "messages":
        return "input"
    if param == "max_completion_tokens":
        return "max_output_tokens"
    if param is None or not param.startswith("messages["):
        return param
    index, _, rest = param.removeprefix("messages[").partition("]")
    if not index.isdigit() or int(index) >= len(origins):
        return "input"
    return origins[int(index)] + rest


def renamed(error: InvalidRequestError, origins: list[str]) -> InvalidRequestError:
    """``error`` naming the Responses request's field where it named the chat request's."""
    param = chat_param(error.param, origins)
    if param == error.param:
        return error
    message = error.message.replace(f"{error.param}:", f"{param}:", 1) if error.param else error.message
    return type(error)(message, param=param, code=error.code)
