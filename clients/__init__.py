"""Typed helpers and examples for talking to the server with the openai SDK and curl (never imports server)."""
