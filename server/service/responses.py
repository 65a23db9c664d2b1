"""``POST /v1/responses`` as a job: the chat job of the translated request (``responses_input``), whose answer and
chunks are reshaped into a ``response`` object and the Responses API's stream of events.

Output items, in the order the model produced them: a ``reasoning`` item (Thinking checkpoints), a ``message`` with one
``output_text`` part, and a ``function_call`` item per tool call. An answer cut by ``max_output_tokens`` is
``incomplete`` (``incomplete_details.reason: max_output_tokens``), and a call cut off with it is not an output item.
Streamed: ``response.created``, ``response.in_progress``, then per item ``output_item.added``, its deltas, its
``.done`` events and ``output_item.done``, and last ``response.completed`` (or ``response.incomplete``), each with a
``sequence_number``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.engine.base import EngineRequest
from server.errors import InvalidRequestError
from server.schemas.chat_response import ChatCompletion, Delta
from server.schemas.common import Usage
from server.schemas.responses import ResponseObject, ResponsesRequest, ResponseUsage
from server.service.chat import ChatJob, whole_json
from server.service.choices import ChoiceState, Piece
from server.service.responses_input import renamed

Event = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def response_usage(usage: Usage, reasoning_tokens: int) -> ResponseUsage:
    details = usage.prompt_tokens_details
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        # vLLM's prefix cache fills itself; nothing is written to a cache on request (OpenAI's cache_write_tokens).
        input_tokens_details={"cached_tokens": details.cached_tokens if details else 0, "cache_write_tokens": 0},
        output_tokens=usage.completion_tokens,
        output_tokens_details={"reasoning_tokens": reasoning_tokens},
        total_tokens=usage.total_tokens,
    )


@dataclass
class _Item:
    """One output item as it is built: its JSON, and for text items the text so far."""

    data: dict[str, Any]
    text: list[str] = field(default_factory=list)
    done: bool = False


@dataclass
class ResponsesJob:
    req: ResponsesRequest
    chat: ChatJob
    origins: list[str] = field(default_factory=list)  # per chat message, the input location it came from
    stored: bool = False  # the finished response will be kept (store=true on a server with a store)
    final: dict[str, Any] | None = None  # the finished response's JSON, once there is one (what a store keeps)
    id: str = field(default_factory=lambda: _id("resp"))
    created: float = field(default_factory=time.time)
    _seq: int = 0
    _items: list[_Item] = field(default_factory=list)
    _open: _Item | None = None  # the reasoning or message item deltas go to
    _calls: dict[int, _Item] = field(default_factory=dict)  # chat call index -> its function_call item
    _choices: Sequence[ChoiceState] = ()

    @property
    def cost(self) -> int:
        return self.chat.cost

    async def prepare(self) -> EngineRequest:
        try:
            return await self.chat.prepare()
        except InvalidRequestError as exc:  # media refused: name the input part, not the chat message it became
            raise renamed(exc, self.origins) from exc

    # --- the whole answer ------------------------------------------------------------------------------------------

    def answer(self, choices: Sequence[ChoiceState], usage: Usage) -> ResponseObject:
        completion: ChatCompletion = self.chat.answer(choices, usage)
        message = completion.choices[0].message
        output: list[dict[str, Any]] = []
        if message.reasoning_content:
            output.append(self._reasoning_item("completed", message.reasoning_content))
        if message.content:
            output.append(self._message_item("completed", message.content))
        for call in message.tool_calls or ():
            output.append(self._call_item("completed", call.id, call.function.name, call.function.arguments))
        answer = self._response(output, choices[0].finish_reason, usage, _reasoning_tokens(choices))
        self.final = answer.model_dump(mode="json")
        return answer

    def _response(
        self, output: list[dict[str, Any]], finish: str | None, usage: Usage | None, reasoning_tokens: int = 0
    ) -> ResponseObject:
        req = self.req
        incomplete = finish == "length"
        status = "in_progress" if finish is None else ("incomplete" if incomplete else "completed")
        return ResponseObject(
            id=self.id,
            created_at=self.created,
            completed_at=None if finish is None else time.time(),
            model=self.chat.model,
            status=status,
            incomplete_details={"reason": "max_output_tokens"} if incomplete else None,
            instructions=req.instructions,
            metadata=req.metadata,
            output=output,
            parallel_tool_calls=req.parallel_tool_calls,
            temperature=req.temperature,
            top_p=req.top_p,
            max_output_tokens=req.max_output_tokens,
            max_tool_calls=req.max_tool_calls,
            tool_choice=req.tool_choice or ("auto" if req.tools else "none"),
            tools=list(req.tools or ()),
            text=req.text or {"format": {"type": "text"}},
            usage=None if usage is None else response_usage(usage, reasoning_tokens),
            user=req.user,
            store=self.stored,
            previous_response_id=req.previous_response_id,
        )

    @staticmethod
    def _reasoning_item(status: str, text: str = "") -> dict[str, Any]:
        content = [{"type": "reasoning_text", "text": text}] if text else []
        return {"type": "reasoning", "id": _id("rs"), "summary": [], "content": content, "status": status}

    @staticmethod
    def _message_item(status: str, text: str | None = None) -> dict[str, Any]:
        content = [] if text is None else [_text_part(text)]
        return {"type": "message", "id": _id("msg"), "role": "assistant", "status": status, "content": content}

    @staticmethod
    def _call_item(status: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
        item = {"type": "function_call", "id": _id("fc"), "call_id": call_id, "name": name}
        return {**item, "arguments": arguments, "status": status}

    # --- the stream ------------------------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def opening(self, choices: Sequence[ChoiceState]) -> Iterable[list[Event]]:
        self._choices = choices
        snapshot = self._response([], None, None).model_dump(mode="json")
        yield [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def chunk(self, pieces: Sequence[Piece]) -> list[Event] | None:
        shaped = self.chat.chunk(pieces)
        if shaped is None or not shaped.choices:
            return None
        events = self._delta_events(shaped.choices[0].delta)
        return events or None

    def _delta_events(self, delta: Delta) -> list[Event]:
        events: list[Event] = []
        if delta.reasoning_content:
            events += self._text_delta("reasoning", delta.reasoning_content)
        if delta.content:
            events += self._text_delta("message", delta.content)
        for call in delta.tool_calls or ():
            item = self._calls.get(call.index)
            if item is None:
                events += self._close_open()
                name = call.function.name if call.function and call.function.name else ""
                item = self._calls[call.index] = self._add(
                    self._call_item("in_progress", call.id or "", name, ""), events
                )
            piece = call.function.arguments if call.function else None
            if piece:
                item.text.append(piece)
                index = self._items.index(item)
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=item.data["id"],
                        output_index=index,
                        delta=piece,
                    )
                )
        return events

    def _add(self, data: dict[str, Any], events: list[Event]) -> _Item:
        item = _Item(data)
        self._items.append(item)
        events.append(self._event("response.output_item.added", output_index=len(self._items) - 1, item=dict(data)))
        return item

    def _text_delta(self, kind: str, text: str) -> list[Event]:
        events: list[Event] = []
        item = self._open
        if item is None or item.data["type"] != kind:
            events += self._close_open()
            data = self._reasoning_item("in_progress") if kind == "reasoning" else self._message_item("in_progress")
            item = self._open = self._add(data, events)
            part = {"type": "reasoning_text", "text": ""} if kind == "reasoning" else _text_part("")
            events.append(self._event("response.content_part.added", **self._where(item), part=part))
        item.text.append(text)
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
        events.append(self._event(name, **self._where(item), delta=text, **extra))
        return events

    def _where(self, item: _Item) -> dict[str, Any]:
        return {"item_id": item.data["id"], "output_index": self._items.index(item), "content_index": 0}

    def _close_open(self) -> list[Event]:
        item, self._open = self._open, None
        if item is None:
            return []
        text = "".join(item.text)
        reasoning = item.data["type"] == "reasoning"
        part = {"type": "reasoning_text", "text": text} if reasoning else _text_part(text)
        done = "response.reasoning_text.done" if reasoning else "response.output_text.done"
        extra: dict[str, Any] = {} if reasoning else {"logprobs": []}
        events = [
            self._event(done, **self._where(item), text=text, **extra),
            self._event("response.content_part.done", **self._where(item), part=part),
        ]
        item.data = {**item.data, "status": "completed", "content": [part]}
        return [*events, self._done(item)]

    def _done(self, item: _Item) -> Event:
        item.done = True
        return self._event("response.output_item.done", output_index=self._items.index(item), item=item.data)

    def closing(self, usage: Usage) -> Iterable[list[Event]]:
        events = self._close_open()
        for item in self._calls.values():
            arguments = "".join(item.text)
            whole = whole_json(arguments)
            item.data = {**item.data, "arguments": arguments, "status": "completed" if whole else "incomplete"}
            index = self._items.index(item)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.data["id"],
                    output_index=index,
                    name=item.data["name"],
                    arguments=arguments,
                )
            )
            events.append(self._done(item))
        finish = self._choices[0].finish_reason if self._choices else "stop"
        # A call cut off by max_output_tokens was streamed as it came (status incomplete) but is not part of the answer.
        output = [item.data for item in self._items if item.data.get("status") != "incomplete"]
        final = self._response(output, finish, usage, _reasoning_tokens(self._choices)).model_dump(mode="json")
        self.final = final
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        events.append(self._event(kind, response=final))
        yield events

    def failed(self, error: dict[str, Any]) -> list[Event]:
        """What a stream that fails after it started ends with: ``error``, then ``response.failed``."""
        snapshot = self._response([item.data for item in self._items], None, None).model_dump(mode="json")
        snapshot.update(
            status="failed", error={"code": error.get("code") or "server_error", "message": error["message"]}
        )
        return [
            self._event("error", code=error.get("code"), message=error["message"], param=error.get("param")),
            self._event("response.failed", response=snapshot),
        ]


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_tokens(choices: Sequence[ChoiceState]) -> int:
    return sum(choice.reasoning_tokens for choice in choices)
