"""OpenAI request/response models (pure pydantic: no torch, no vLLM)."""
