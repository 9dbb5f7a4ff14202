"""The README's technician tour, followed literally (issue 14, acceptance 3): its shell blocks
between `<!-- tour: begin` and `<!-- tour: end -->` run as written, in one shell, in a scratch
directory, with only PATH set to this venv's commands. Hubs are loaded before the import there;
once put back as the tour says, the books balance and no GUID on the bench is `not_received`."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jigd.model import Guid

pytestmark = pytest.mark.slow  # the daemon and the simulator as real processes

README = Path(__file__).resolve().parent.parent / "README.md"
TOUR_TIMEOUT_S = 150


def tour_script(readme: str) -> str:
    """The tour's shell blocks, in order, as one script."""
    start = readme.index("<!-- tour: begin")
    end = readme.index("<!-- tour: end -->")
    blocks = re.findall(r"^```sh\n(.*?)^```$", readme[start:end], flags=re.DOTALL | re.MULTILINE)
    assert blocks, "the README's tour has no sh blocks"
    return "".join(blocks)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.timeout(TOUR_TIMEOUT_S + 30)
def test_the_tour_followed_literally_balances_its_books(tmp_path: Path) -> None:
    script = tour_script(README.read_text(encoding="utf-8"))
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    shell = subprocess.Popen(
        ["/bin/bash", "-e", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its background jobs too: killed as a group on the way out
    )
    try:
        output, _ = shell.communicate(timeout=TOUR_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        output = exc.output or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the tour stopped its own jobs
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
    tour = tmp_path / "tour"
    logs = "\n".join(
        f"--- {name}\n{(tour / name).read_text(errors='replace')[-3000:]}"
        for name in ("jigd.log", "jigsim.log")
        if (tour / name).exists()
    )
    assert shell.returncode == 0, f"{output[-4000:]}\n{logs}"

    # Some hubs went in before the import, were listed as set aside, and were put back.
    aside = re.findall(r"^set aside, re-insert: (\S+) \(rig 1 slot \d\b", output, re.MULTILINE)
    assert aside, output[-4000:]
    assert re.findall(r"^re-insert (\S+)$", output, re.MULTILINE) == aside

    pallet = json.loads((tour / "pallet.json").read_text(encoding="utf-8"))
    listed = {str(Guid.parse(h["guid"])) for h in pallet["hubs"] if h["listed"]}
    unlisted = {str(Guid.parse(h["guid"])) for h in pallet["hubs"] if not h["listed"]}
    missing = {str(Guid.parse(row["guid"])) for row in pallet["missing"]}
    assert not missing  # the tour's pallet leaves none out: nothing may end not_received
    reports = tour / "reports"
    summary = json.loads((reports / "summary.json").read_text(encoding="utf-8"))
    outcome = {row["guid"]: row["outcome"] for row in _rows(reports / "results.csv")}
    assert summary["status"] == "closed"
    assert sum(summary["counts"].values()) == summary["expected"] == len(listed | missing)
    assert set(outcome) == listed | missing
    assert {g for g, o in outcome.items() if o == "not_received"} == missing
    assert set(aside) <= {g for g, o in outcome.items() if o in ("reflashed", "already_current")}
    assert summary["set_aside"] == []
    assert summary["counts"]["already_current"] >= 1  # `jigsim image` made the hubs' own image
    assert not unlisted & set(outcome)
