"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.state import StateDep
from server.errors import EngineUnavailableError, ModelNotFoundError
from server.schemas.models import ModelCard, ModelList
from server.schemas.openapi import GUARD_ERRORS, error_responses

router = APIRouter()


def _card(state: StateDep) -> ModelCard:
    if state.engine is None:
        raise EngineUnavailableError("the model is still loading; retry shortly")
    info = state.engine.model
    return ModelCard(id=info.name, created=info.created, max_model_len=info.max_model_len)


@router.get("/v1/models", responses=error_responses(*GUARD_ERRORS))
async def list_models(state: StateDep) -> ModelList:
    return ModelList(data=[_card(state)])


@router.get("/v1/models/{model_id:path}", responses=error_responses(404, *GUARD_ERRORS))
async def get_model(model_id: str, state: StateDep) -> ModelCard:
    card = _card(state)
    if model_id != card.id:
        raise ModelNotFoundError(f"the model '{model_id}' does not exist", param="model")
    return card
