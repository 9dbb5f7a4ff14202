"""Whether the books balance: the demo's reports against the pallet and the simulator's ground
truth (what every simulated hub really runs). With several stations (`jigd.demo.site`) the truth
is the union of every bench's: a hub moved between benches counts where it ended, and every hub
of the pallet must be on exactly one bench."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jigd.demo.workdir import Paths
from sim.pallet import Pallet

__all__ = ["check_books", "verdict"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def check_books(paths: Paths, pallet: Pallet, truths: Sequence[Path] | None = None) -> list[str]:
    """Compare the reports under `paths` with the pallet and the ground truth (`truths`: every
    bench's file; default `paths.ground_truth`); list what differs."""
    try:
        summary = json.loads((paths.reports / "summary.json").read_text(encoding="utf-8"))
        results = _read_csv(paths.reports / "results.csv")
        smi = _read_csv(paths.reports / "smi-update.csv")
        faults = _read_csv(paths.reports / "fault-analysis.csv")
        benches = [
            json.loads(path.read_text(encoding="utf-8"))["hubs"]
            for path in (truths or [paths.ground_truth])
        ]
    except (OSError, ValueError, KeyError) as exc:
        return [f"cannot read the reports or the ground truth: {exc}"]
    hubs, problems = _union(benches, pallet)
    manifest = {str(row.guid) for row in pallet.manifest()}
    problems += _one_outcome_each(manifest, results)
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


def _union(
    benches: list[list[dict[str, Any]]], pallet: Pallet
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every hub where it is (a moved hub where it ended); a pallet hub on no bench, or on two,
    is a problem. One bench's truth is taken as it is."""
    hubs: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for entries in benches:
        for hub in entries:
            if hub.get("where") == "moved":
                continue
            if hub["guid"] in hubs:
                problems.append(f"{hub['guid']}: on two benches at once")
            hubs[hub["guid"]] = hub
    if len(benches) > 1:
        problems += [
            f"{hub.guid}: on no bench (moved, and never arrived?)"
            for hub in pallet.hubs
            if str(hub.guid) not in hubs
        ]
    return hubs, problems


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


def verdict(problems: list[str], show: Callable[[str], None], balanced: str) -> int:
    """Say whether the books balance (`balanced`: what that means here): 0, or 1 with the first
    50 problems."""
    if problems:
        show(f"jigd demo: the books do NOT balance ({len(problems)} problem(s)):")
        for problem in problems[:50]:
            show(f"  {problem}")
        return 1
    show(f"jigd demo: the books balance: {balanced}")
    return 0
