"""Moved: the runner is ``server.service.runner`` (this name stays until the composition root imports it there)."""

from server.service.runner import GenerationRunner as GenerationRunner
