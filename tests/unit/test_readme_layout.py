"""README's Layout section names every package and module of the tree, so a reader can find each part by its name."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def layout() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert found, "README has no Layout section"
    return found.group(1)


def modules(folder: str) -> set[str]:
    return {p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}


def packages(folder: str) -> set[str]:
    return {f"{p.name}/" for p in (ROOT / folder).iterdir() if p.is_dir() and p.name != "__pycache__"}


def test_every_package_and_module_is_named() -> None:
    expected = {"server/", "offline/", "clients/", "benchmarks/", "deploy/", "tests/"}
    expected |= packages("server") | packages("offline") | packages("deploy") | packages("tests")
    for folder in ("server", "server/api", "server/service", "server/media", "server/engine", "offline", "clients"):
        expected |= modules(folder)
    expected |= modules("benchmarks")
    text = layout()
    missing = sorted(name for name in expected if not re.search(rf"(?<![\w.]){re.escape(name)}", text))
    assert not missing, f"README's Layout section does not name: {missing}"


def test_the_layout_names_nothing_that_is_gone() -> None:
    named = set(re.findall(r"(?<![\w/.])([a-z_]+\.py)\b", layout()))
    present = {p.name for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    assert named <= present, f"README's Layout names modules that do not exist: {sorted(named - present)}"
