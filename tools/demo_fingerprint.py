"""A demo run's observable output with the run-to-run noise taken out, for before/after diffs.

An architecture change must not change what the station says: the reports and the MQTT stream
of `jigd demo` for one seed must be the same before and after. Two runs of the same seed differ
only in wall-clock values (timestamps, event ids, durations) and in which free slot a hub lands
in and how often a slot's progress is sent. This prints everything else, in a stable order:

    jigd demo --faults none --seed 7 --workdir W --mqtt mqtt://127.0.0.1:P/base
    (with `mosquitto_sub -p P -v -t '#' -F '%t %p' > stream.txt` running alongside)
    python tools/demo_fingerprint.py W stream.txt > before.txt   # then after.txt; diff them

Kept byte for byte: every report file's header and every cell that is not a time, a slot or
an attempt count; every MQTT payload's JSON key order and values but the noisy ones; the set
of topics. Normalised: times -> "T", event ids -> "E", rig/slot of a result -> "R"/"S", the
counts of a batch's summaries while it is open -> "N", "rig 2 slot 5" in a text -> "rig R slot S".
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

TIME_KEYS = {
    "ts",
    "started",
    "finished",
    "created_at",
    "closed_at",
    "first_started",
    "last_finished",
    "generated_at",
    "since",
}
SLOT_KEYS = {"rig", "slot"}
RUNNING_COUNTS = {"received", "pending", "counts"}
WHERE = re.compile(r"rig \d+ slot \d+")
GUID_TOPIC = re.compile(r"([0-9A-F]{2}-){7}[0-9A-F]{2}")


def _scrub(value: Any, *, slots: bool) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in TIME_KEYS and item is not None:
                out[key] = "T"
            elif key == "event_id":
                out[key] = "E"
            elif slots and key in SLOT_KEYS and item is not None:
                out[key] = key[0].upper()
            else:
                out[key] = _scrub(item, slots=slots)
        return out
    if isinstance(value, list):
        return [_scrub(item, slots=slots) for item in value]
    if slots and isinstance(value, str):
        return WHERE.sub("rig R slot S", value)
    return value


def reports(root: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted((root / "reports").iterdir()):
        lines.append(f"== {path.name}")
        if path.suffix == ".json":
            lines.append(json.dumps(_scrub(json.loads(path.read_text()), slots=True), indent=1))
            continue
        rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
        header, body = rows[0], rows[1:]
        noisy = {i for i, name in enumerate(header) if name in TIME_KEYS | SLOT_KEYS}
        lines.append(",".join(header))
        lines.extend(
            sorted(
                ",".join("~" if i in noisy else cell for i, cell in enumerate(row)) for row in body
            )
        )
    return lines


def stream(path: Path) -> list[str]:
    by_kind: dict[str, list[str]] = {}
    slot_shapes: set[str] = set()
    for line in path.read_text().splitlines():
        topic, _, payload = line.partition(" ")
        data = json.loads(payload)
        if "/slots/" in topic:
            # How often a slot's progress is sent depends on timing; its shape does not.
            slot_shapes.add(json.dumps(list(data)))
            continue
        kind = GUID_TOPIC.sub("GUID", topic)
        if kind.endswith("/summary") and data.get("status") == "open":
            # A running batch's counts depend on which hubs finished first; the closed one's
            # do not.
            data = {key: ("N" if key in RUNNING_COUNTS else item) for key, item in data.items()}
        text = json.dumps(_scrub(data, slots=True), separators=(",", ":"))
        by_kind.setdefault(kind, []).append(f"{GUID_TOPIC.sub('GUID', topic)} {text}")
    lines = [f"slot payload keys: {shape}" for shape in sorted(slot_shapes)]
    for kind in sorted(by_kind):
        lines.append(f"== {kind}: {len(by_kind[kind])} messages")
        lines.extend(sorted(by_kind[kind]))
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(reports(Path(argv[1])) + stream(Path(argv[2]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
