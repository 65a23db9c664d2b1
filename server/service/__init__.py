"""OpenAI semantics over the Engine protocol; knows nothing about HTTP."""
