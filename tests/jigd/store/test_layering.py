"""The store knows nothing of MQTT: its modules hold no topic. (That they import no MQTT code,
and that jigd.events imports only jigd.model, are import rules: .importlinter, `make lint`.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

JIGD = Path(__file__).resolve().parents[3] / "jigd"
STORE_MODULES = sorted((JIGD / "store").rglob("*.py"))
TOPIC_TEXTS = ("batches/", "/results/", "/summary", "slots/")


@pytest.mark.parametrize("path", STORE_MODULES, ids=lambda p: str(p.relative_to(JIGD)))
def test_store_modules_hold_no_topic(path: Path) -> None:
    texts = [
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert not [t for t in texts if any(topic in t for topic in TOPIC_TEXTS) or t == "alerts"]


def test_the_store_modules_are_found() -> None:
    assert JIGD / "store" / "sqlite" / "worker.py" in STORE_MODULES
