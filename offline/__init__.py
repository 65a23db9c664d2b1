"""Tools that run without a server, beside the request path: ``qwen3vl-offline`` (see ``offline.cli``).

The tiny random-weight checkpoint builder (``offline.tiny``; the server's composition root also uses it for the embedded
demo model), the memory arithmetic of a profile (``offline.memory``), the scale models that let CI run an H100 profile's
layout on a CPU (``offline.scale``), the bundled model configs they read (``offline.configs``) and the ``vllm serve``
command a profile equals (``offline.vllm_command``). Serving never imports this package except ``server.app`` →
``offline.tiny`` (an import-linter contract says so); from ``server`` this package uses only the profiles and settings.
"""
