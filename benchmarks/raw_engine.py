"""The ceiling: vLLM's ``AsyncLLM`` driven in-process, no HTTP, media handed over already decoded.

    python -m benchmarks.raw_engine --model CHECKPOINT --workloads unique-448,text --out raw.json

Run by ``benchmarks.side_by_side`` in a process of its own (one engine alive at a time). The same datasets as the HTTP
runs (``benchmarks.datasets.make_dataset``), the same sampling (temperature 0, ``ignore_eos``, the same
``max_tokens``) and the same closed-loop concurrency; images are decoded before the clock starts to RGB uint8 arrays,
the fastest form vLLM's renderer takes (and the one our gateway hands over). The CPU of this process (the driver and
AsyncLLM's front half: renderer, HF processor, output processing) is measured as the servers' gateways are: it is the
floor of what any server built on ``AsyncLLM`` spends per request, before HTTP, JSON or media decoding. Videos are not driven here (the raw path would need Qwen3-VL's video metadata
assembled by hand); the video workload compares the two servers only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.datasets import RequestSpec
from benchmarks.process_tree import TreeSampler
from benchmarks.report import RequestRecord, summarize
from benchmarks.workloads import WORKLOADS, Workload


def _prompt(processor: Any, spec: RequestSpec) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    content: list[dict[str, Any]] = [{"type": "image"} for _ in spec.images]
    content.append({"type": "text", "text": spec.prompt})
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    prompt: dict[str, Any] = {"prompt": text}
    if spec.images:
        images = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in spec.images]
        prompt["multi_modal_data"] = {"image": images}
    return prompt


async def _drive(llm: Any, prompts: Sequence[dict[str, Any]], max_tokens: int, concurrency: int) -> list[RequestRecord]:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        max_tokens=max_tokens, temperature=0.0, ignore_eos=True, output_kind=RequestOutputKind.DELTA
    )
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: dict[str, Any]) -> RequestRecord:
        async with gate:
            start = time.perf_counter()
            first: float | None = None
            stamps: list[float] = []
            tokens = 0
            prompt_tokens = 0
            async for out in llm.generate(prompt, params, request_id=uuid.uuid4().hex):
                now = time.perf_counter()
                produced = len(out.outputs[0].token_ids)
                if produced:
                    if first is None:
                        first = now
                    stamps.append(now)
                    tokens += produced
                if out.prompt_token_ids is not None:
                    prompt_tokens = len(out.prompt_token_ids)
            end = time.perf_counter()
            return RequestRecord.from_timings(
                start=start,
                first_token=first,
                chunk_times=stamps,
                end=end,
                prompt_tokens=prompt_tokens,
                completion_tokens=tokens,
            )

    return list(await asyncio.gather(*(one(p) for p in prompts)))


async def run(model: str, workloads: Sequence[Workload], concurrency: int) -> dict[str, Any]:
    from transformers import AutoProcessor
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from benchmarks.targets import ENGINE

    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **ENGINE))
    processor = AutoProcessor.from_pretrained(model)
    results: dict[str, Any] = {}
    try:
        # Warm-up outside the clock: two image requests.
        warm = next(w for w in WORKLOADS.values() if w.kind == "unique-images").dataset(2, seed=99)
        await _drive(llm, [_prompt(processor, r) for r in warm], warm[0].max_tokens, 2)
        for workload in workloads:
            requests = workload.dataset(workload.requests)
            prompts = [_prompt(processor, r) for r in requests]  # decoded before the clock starts
            with TreeSampler(os.getpid()) as sampler:  # this process is "api", AsyncLLM's engine core "engine"
                start = time.perf_counter()
                records = await _drive(llm, prompts, requests[0].max_tokens, concurrency)
                duration = time.perf_counter() - start
            results[workload.name] = {**summarize(records, duration_s=duration), **sampler.summary(len(records))}
    finally:
        llm.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    chosen = [WORKLOADS[name] for name in args.workloads.split(",") if WORKLOADS[name].kind != "videos"]
    results = asyncio.run(run(args.model, chosen, args.concurrency))
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
