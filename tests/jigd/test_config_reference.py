"""`jigd config reference`: the configuration reference generated from the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from jigd.cli import main
from jigd.config_reference import BEGIN_MARKER, END_MARKER, reference_markdown

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "install.md"


def test_print_is_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == reference_markdown()


def test_update_rewrites_only_the_marked_section(tmp_path: Path) -> None:
    stale = tmp_path / "install.md"
    stale.write_text(
        f"# Guide\n\nbefore\n\n{BEGIN_MARKER}\n| old | table |\n{END_MARKER}\n\nafter\n",
        encoding="utf-8",
    )
    assert main(["config", "reference", "--update", str(stale)]) == 0
    text = stale.read_text("utf-8")
    assert text.startswith("# Guide\n\nbefore\n\n")
    assert text.endswith(f"{END_MARKER}\n\nafter\n")
    assert "| old | table |" not in text
    assert reference_markdown().strip() in text
    once = text
    assert main(["config", "reference", "--update", str(stale)]) == 0
    assert stale.read_text("utf-8") == once  # idempotent


def test_update_needs_the_markers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "plain.md"
    doc.write_text("# no markers here\n", encoding="utf-8")
    assert main(["config", "reference", "--update", str(doc)]) == 2
    assert "needs the lines" in capsys.readouterr().err
    assert doc.read_text("utf-8") == "# no markers here\n"
    assert main(["config", "reference", "--update", str(tmp_path / "missing.md")]) == 2


def test_limits_and_defaults_come_from_the_model() -> None:
    text = reference_markdown()
    assert "| `stage_attempts` | integer, >= 1, <= 20 | `3` |" in text
    assert '| `transport` | `"serial"` or `"usb"` | `"serial"` |' in text
    assert "| `station` | string, matching `^[A-Za-z0-9_.-]+$` | required |" in text
    assert "| `metrics_port` | integer, >= 1, <= 65535, optional | unset |" in text
    assert "| `shutdown_s` | number, > 0, finite | `45.0` |" in text
