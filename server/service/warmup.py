"""The start-up warm-up: one image and one short video through the whole engine path before ``/ready`` says yes."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np

from server.engine.base import Engine, EngineRequest, SamplingSpec, VideoInput

logger = logging.getLogger(__name__)


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


async def warm_up(engine: Engine, *, with_video: bool = True) -> float:
    """Run the warm-up request; returns its duration in seconds. Raises whatever the engine raises."""
    start = time.perf_counter()
    image = _noise(64, 64, 0)
    frames = np.stack([_noise(64, 64, i) for i in range(4)])
    video = VideoInput(frames=frames, fps=2.0, total_num_frames=4, frames_indices=(0, 1, 2, 3), duration=2.0)
    content = [{"type": "image"}, *([{"type": "video"}] if with_video else []), {"type": "text", "text": "Describe."}]
    prompt = engine.render_prompt([{"role": "user", "content": content}])
    request = EngineRequest(
        request_id=f"warmup-{uuid.uuid4().hex}",
        prompt=prompt,
        sampling=SamplingSpec(max_tokens=2, temperature=0.0),
        images=(image,),
        videos=(video,) if with_video else (),
    )
    async for _ in engine.generate(request):
        pass
    elapsed = time.perf_counter() - start
    logger.info("warm-up (image%s) finished in %.2f s", " + video" if with_video else "", elapsed)
    return elapsed
