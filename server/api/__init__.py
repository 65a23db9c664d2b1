"""HTTP: routes, error handlers, SSE and middleware. Knows nothing about vLLM."""
