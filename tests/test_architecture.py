"""The architecture's rules hold on the tree (docs/architecture.md, "Layers", "Import rules").

The import rules live in `.importlinter` and run in `make lint`; these tests also show that
the check bites: the same check on a copy of the tree with one forbidden import fails, naming
the rule and the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.logic_lines import logic_lines

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jigd", "drivers", "firmware_catalog", "sim")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_LOGIC_LINES = 600


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_tree_keeps_the_import_rules() -> None:
    run = _lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(
    ("module", "line", "rule"),
    [
        ("drivers/serial.py", "import jigd.station", "drivers import only the shared model"),
        (
            "firmware_catalog/entry.py",
            "from drivers import errors",
            "firmware_catalog imports only the shared model",
        ),
        ("jigd/station.py", "import sim.rig", "the daemon does not import the simulator"),
        ("sim/rig.py", "import jigd.config", "the simulator does not import the daemon"),
        ("jigd/model.py", "import jigd.store", "jigd.model is the shared model"),
        ("jigd/events.py", "import jigd.store", "jigd.events imports only the shared model"),
        (
            "jigd/store/sqlite/outbox.py",
            "from jigd import payloads",
            "the store keeps events and knows no topics",
        ),
        ("jigd/mqtt_client.py", "import jigd.station", "the MQTT client knows nothing"),
    ],
)
def test_a_forbidden_import_breaks_the_lint(
    tmp_path: Path, module: str, line: str, rule: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # a deliberate violation\n")

    run = _lint_imports(tmp_path)

    assert run.returncode != 0
    assert f"{rule}" in run.stdout
    assert "BROKEN" in run.stdout
    dotted = module.removesuffix(".py").replace("/", ".")
    assert dotted in run.stdout, run.stdout


def test_no_module_holds_more_than_600_lines_of_logic() -> None:
    modules = [
        path
        for top in (*PACKAGES, "tests", "bench", "tools")
        for path in (ROOT / top).rglob("*.py")
    ]
    assert len(modules) > 50
    too_long = {
        str(path.relative_to(ROOT)): count
        for path in modules
        if (count := logic_lines(path)) > MAX_LOGIC_LINES
    }
    assert not too_long, f"over {MAX_LOGIC_LINES} lines of logic: {too_long}"


def test_code_and_docs_cite_only_the_repository() -> None:
    """The architecture is docs/architecture.md: nothing cites a design file outside the repo."""
    cited = [
        str(path.relative_to(ROOT))
        for top in (*PACKAGES, "tests", "bench", "tools", "docs", "systemd")
        for path in (ROOT / top).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".json", ".service"}
        and "DESIGN" + ".md" in path.read_text(encoding="utf-8", errors="replace")
    ]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "DESIGN" + ".md" not in readme
    assert not cited, f"these cite a file outside the repository: {cited}"
    assert (ROOT / "docs" / "architecture.md").is_file()
