"""Media preparation: fetch → check → decode (→ budget, in a later stage). Never imports FastAPI."""
