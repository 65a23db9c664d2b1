"""The engine boundary: a protocol, its vLLM adapter and a fake for tests."""
