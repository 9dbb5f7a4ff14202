"""Whether the books balance: the demo's reports against the pallet and the simulator's ground
truth (what every simulated hub really runs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from jigd.demo.workdir import Paths
from sim.pallet import Pallet

__all__ = ["check_books"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def check_books(paths: Paths, pallet: Pallet) -> list[str]:
    """Compare the reports with the pallet and the simulator's ground truth; list what differs."""
    try:
        summary = json.loads((paths.reports / "summary.json").read_text(encoding="utf-8"))
        results = _read_csv(paths.reports / "results.csv")
        smi = _read_csv(paths.reports / "smi-update.csv")
        faults = _read_csv(paths.reports / "fault-analysis.csv")
        truth = json.loads(paths.ground_truth.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"cannot read the reports or the ground truth: {exc}"]
    hubs: dict[str, dict[str, Any]] = {h["guid"]: h for h in truth["hubs"]}
    manifest = {str(row.guid) for row in pallet.manifest()}
    problems = _one_outcome_each(manifest, results)
    rows = {row["guid"]: row for row in results}
    for guid, row in rows.items():
        problems += _agrees_with_truth(guid, row, hubs.get(guid))
    outcome = {g: row["outcome"] for g, row in rows.items()}
    problems += [
        f"{row.guid}: missing from the pallet but {outcome.get(str(row.guid))!r}"
        for row in pallet.missing
        if outcome.get(str(row.guid)) != "not_received"
    ]
    reflashed = {g for g, o in outcome.items() if o == "reflashed"}
    failed = {g for g, o in outcome.items() if o == "failed"}
    if sorted(r["guid"] for r in smi) != sorted(reflashed):
        problems.append("smi-update.csv is not exactly the reflashed set")
    if sorted(r["guid"] for r in faults) != sorted(failed):
        problems.append("fault-analysis.csv is not exactly the failed set")
    problems += [
        f"{row['guid']}: smi-update says {row['firmware_version']}"
        for row in smi
        if hubs.get(row["guid"], {}).get("active_version") != row["firmware_version"]
    ]
    problems += [
        f"{row['guid']}: fault-analysis says locked=yes, but the hub is unlocked"
        for row in faults
        if row.get("locked") == "yes" and hubs.get(row["guid"], {}).get("locked") is False
    ]
    if sum(summary["counts"].values()) != len(manifest):
        problems.append(f"summary counts {summary['counts']} do not add up to {len(manifest)}")
    for hub in pallet.hubs:
        if not hub.listed:
            problems += _untouched(
                str(hub.guid), str(hub.firmware_version), hubs.get(str(hub.guid))
            )
    return problems


def _one_outcome_each(manifest: set[str], results: list[dict[str, str]]) -> list[str]:
    counted: dict[str, int] = {}
    for row in results:
        if row["outcome"]:
            counted[row["guid"]] = counted.get(row["guid"], 0) + 1
    problems = [
        f"{g}: {counted.get(g, 0)} outcomes" for g in sorted(manifest) if counted.get(g) != 1
    ]
    return problems + [
        f"{g}: has a result but is not in the manifest" for g in set(counted) - manifest
    ]


def _agrees_with_truth(guid: str, row: dict[str, str], hub: dict[str, Any] | None) -> list[str]:
    outcome = row["outcome"]
    if outcome == "not_received":
        return (
            []
            if hub is None or hub.get("where") == "pallet"
            else [f"{guid}: not_received but seen"]
        )
    if outcome not in ("reflashed", "already_current"):
        return []
    if hub is None:
        return [f"{guid}: {outcome} but not on the pallet"]
    problems = []
    if hub["active_version"] != row["to_version"] or hub["active_sha256"] != row["image_sha256"]:
        problems.append(
            f"{guid}: {outcome} to {row['to_version']}, hub runs {hub['active_version']}"
        )
    if not hub["confirmed"] or not hub["locked"] or hub["bricked"]:
        problems.append(
            f"{guid}: {outcome} but confirmed={hub['confirmed']} locked={hub['locked']} "
            f"bricked={hub['bricked']}"
        )
    return problems


def _untouched(guid: str, version: str, hub: dict[str, Any] | None) -> list[str]:
    """A rejected hub must be exactly as it arrived: same image, locked, nothing uploaded."""
    if hub is None:
        return [f"{guid}: unlisted hub missing from the ground truth"]
    if hub["active_version"] != version or not hub["locked"] or hub["secondary_sha256"]:
        return [f"{guid}: unlisted (rejected) hub was touched: {hub}"]
    return []
