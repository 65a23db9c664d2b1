"""The runner's one path: a stream and a whole answer are the same applied steps, and every way out releases the slot.

A recording job stands in for an API: its chunks are the pieces the runner applied, its answer the final choice states.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace

import pytest
from prometheus_client import CollectorRegistry

from server.engine.base import ChoiceDelta, EngineRequest, EngineStep, OutputSpec, SamplingSpec, ToolCallDelta
from server.engine.fake import FakeEngine
from server.errors import EngineUnavailableError, RequestTimeoutError
from server.schemas.common import Usage
from server.service.admission import Admission, AdmissionLimits, AdmissionMetrics
from server.service.choices import ChoiceState, Piece
from server.service.runner import GenerationRunner
from server.service.timing import Timings


def part(**fields: object) -> ChoiceDelta:
    return replace(ChoiceDelta(index=0, text="", token_ids=()), **fields)  # type: ignore[arg-type]


# Content, reasoning and two calls whose pieces span steps; one step ends call 0 and starts call 1.
SCRIPT = [
    part(reasoning="Think"),
    part(content="Let me check."),
    part(tool_calls=(ToolCallDelta(index=0, name="get_weather"),)),
    part(tool_calls=(ToolCallDelta(index=0, arguments='{"city": '),)),
    part(tool_calls=(ToolCallDelta(index=0, arguments='"Paris"}'), ToolCallDelta(index=1, name="get_time"))),
    part(tool_calls=(ToolCallDelta(index=1, arguments="{}"),)),
]


@dataclass
class RecordingJob:
    """A job whose chunks are the applied pieces and whose answer is the final states and usage."""

    n: int = 2
    parallel_tool_calls: bool = True
    cost: int = 10
    prepare_error: Exception | None = None

    async def prepare(self) -> EngineRequest:
        if self.prepare_error is not None:
            raise self.prepare_error
        output = OutputSpec(
            tools=({"type": "function"},), tool_choice="auto", parallel_tool_calls=self.parallel_tool_calls
        )
        return EngineRequest(request_id="r", prompt="a b c", sampling=SamplingSpec(n=self.n), output=output)

    def opening(self, choices: Sequence[ChoiceState]) -> Iterable[list[Piece]]:
        return ()

    def chunk(self, pieces: Sequence[Piece]) -> list[Piece]:
        return list(pieces)

    def closing(self, usage: Usage) -> Iterable[list[Piece]]:
        return ()

    def answer(self, choices: Sequence[ChoiceState], usage: Usage) -> tuple[list[ChoiceState], Usage]:
        return list(choices), usage


def make(engine: FakeEngine) -> tuple[GenerationRunner, Admission]:
    limits = AdmissionLimits(max_running=4, max_queued=4, max_running_tokens=1000, max_wait_s=30)
    admission = Admission(limits, AdmissionMetrics(CollectorRegistry()))
    return GenerationRunner(engine, admission), admission


def scripted() -> FakeEngine:
    return FakeEngine(script=[f"<t{i}>" for i in range(len(SCRIPT))], script_parts=SCRIPT)


def fold(pieces: Iterable[Piece], n: int) -> list[dict[str, object]]:
    """What a client rebuilds from the streamed pieces alone."""
    out: list[dict[str, object]] = [{"content": "", "reasoning": "", "calls": {}, "finish": None} for _ in range(n)]
    for piece in pieces:
        choice = out[piece.delta.index]
        choice["content"] = f"{choice['content']}{piece.delta.content or ''}"
        choice["reasoning"] = f"{choice['reasoning']}{piece.delta.reasoning or ''}"
        calls: dict[int, list[str]] = choice["calls"]  # type: ignore[assignment]
        for call in piece.delta.tool_calls:
            calls.setdefault(call.index, [call.name or ""]).append(call.arguments or "")
        choice["finish"] = piece.delta.finish_reason or choice["finish"]
    return out


def folded(states: Sequence[ChoiceState]) -> list[dict[str, object]]:
    return [
        {
            "content": "".join(s.content),
            "reasoning": "".join(s.reasoning),
            "calls": {i: [c.name, *c.arguments] for i, c in s.tool_calls.items()},
            "finish": s.finish_reason,
        }
        for s in states
    ]


def without_empty_pieces(value: list[dict[str, object]]) -> list[dict[str, object]]:
    for choice in value:
        calls: dict[int, list[str]] = choice["calls"]  # type: ignore[assignment]
        for index, pieces in calls.items():
            calls[index] = [pieces[0], *(p for p in pieces[1:] if p)]
    return value


@pytest.mark.parametrize("parallel", [True, False])
async def test_a_stream_and_a_whole_answer_are_the_same_applied_steps(parallel: bool) -> None:
    runner, admission = make(scripted())
    job = RecordingJob(parallel_tool_calls=parallel)
    run = await runner.start(job, 30, Timings())
    streamed = [piece async for chunk in run.chunks() for piece in chunk]
    states, usage = await runner.collect(RecordingJob(parallel_tool_calls=parallel), 30, Timings())

    assert without_empty_pieces(fold(streamed, 2)) == folded(run.choices) == folded(states)
    assert {len(s.tool_calls) for s in states} == {2 if parallel else 1}  # the filter applies on both paths
    assert usage == run.usage() and usage.completion_tokens == 2 * len(SCRIPT)
    assert admission.running == 0


async def test_a_calls_first_piece_is_marked_new_once_and_logprob_offsets_advance() -> None:
    runner, _ = make(FakeEngine(script=["ab", "c", "def"]))
    job = RecordingJob(n=1)
    request = await job.prepare()
    job.prepare = lambda: _ready(replace(request, sampling=SamplingSpec(n=1, logprobs=0)))  # type: ignore[method-assign]
    run = await runner.start(job, 30, Timings())
    pieces = [piece async for chunk in run.chunks() for piece in chunk]
    assert [p.logprob_offset for p in pieces] == [0, 2, 3]

    runner, _ = make(scripted())
    run = await runner.start(RecordingJob(n=1), 30, Timings())
    pieces = [piece async for chunk in run.chunks() for piece in chunk]
    assert [sorted(p.new_calls) for p in pieces] == [[], [], [0], [], [1], []]


async def _ready(request: EngineRequest) -> EngineRequest:
    return request


async def test_a_run_never_read_releases_its_slot_on_aclose() -> None:
    engine = scripted()
    runner, admission = make(engine)
    run = await runner.start(RecordingJob(), 30, Timings())
    assert admission.running == 1 and engine.in_flight == 1
    await run.aclose()
    await run.aclose()  # safe to repeat
    assert admission.running == 0 and engine.in_flight == 0


async def drive(runner: GenerationRunner, job: RecordingJob, timeout_s: float, *, streamed: bool) -> None:
    if not streamed:
        await runner.collect(job, timeout_s, Timings())
        return
    run = await runner.start(job, timeout_s, Timings())
    async for _ in run.chunks():
        pass


@pytest.mark.parametrize("streamed", [True, False])
async def test_the_deadline_is_one_error_on_both_paths(streamed: bool) -> None:
    engine = FakeEngine(script=["x"] * 1000, delay_s=0.05)
    runner, admission = make(engine)
    with pytest.raises(RequestTimeoutError, match=r"did not finish within its deadline of 0\.3 s"):
        await drive(runner, RecordingJob(n=1), 0.3, streamed=streamed)
    assert admission.running == 0 and engine.in_flight == 0


@pytest.mark.parametrize("streamed", [True, False])
async def test_a_stream_cut_off_by_the_engine_is_an_error_on_both_paths(streamed: bool) -> None:
    engine = scripted()
    engine.vanish_after = 3
    runner, admission = make(engine)
    with pytest.raises(EngineUnavailableError, match="stopped before the request finished"):
        await drive(runner, RecordingJob(), 30, streamed=streamed)
    assert admission.running == 0


async def test_a_failed_prepare_releases_the_slot_and_never_reaches_the_engine() -> None:
    engine = scripted()
    runner, admission = make(engine)
    with pytest.raises(ValueError, match="bad media"):
        await runner.start(RecordingJob(prepare_error=ValueError("bad media")), 30, Timings())
    assert admission.running == 0 and engine.requests == []


@dataclass
class SignallingEngine(FakeEngine):
    """Says when its first step has left, so a test acts on a request that is surely generating."""

    stepping: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineStep]:
        async for step in super().generate(request):
            self.stepping.set()
            yield step


async def test_a_cancelled_whole_answer_aborts_the_engine_request() -> None:
    engine = SignallingEngine(script=["x"] * 10_000, delay_s=0.01)
    runner, admission = make(engine)
    task = asyncio.create_task(runner.collect(RecordingJob(n=1), 60, Timings()))
    await asyncio.wait_for(engine.stepping.wait(), 30)
    assert engine.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.in_flight == 0 and admission.running == 0
