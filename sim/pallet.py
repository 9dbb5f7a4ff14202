"""Pallets: the hubs physically delivered, and the manifest the sending party wrote for them.

They differ the way real deliveries do: `missing` hubs are listed in the manifest but are not
on the pallet, `extra` hubs are on the pallet but not listed, and `current` hubs already run the
latest firmware of their Device Model. Everything is derived from the seed, so the same
arguments write the same files.

Pallet JSON (`jigsim.pallet/1`):

    {"schema": "jigsim.pallet/1", "seed": 7, "fault_profile": "light",
     "latest": {"1086/57310102": "04000007"},
     "hubs": [{"guid": "00-DB-...", "model": "1086/57310102", "firmware_version": "03000007",
               "listed": true, "faults": {...}}],
     "missing": [{"guid": ..., "model": ..., "firmware_version": ...}]}

Manifest CSV: `guid,manufacturer,model,firmware_version`, one row per listed hub (present or
missing), sorted by GUID.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jigd.model import (
    DeviceModel,
    DeviceModelField,
    FirmwareVersion,
    FirmwareVersionField,
    Guid,
    GuidField,
)
from sim.faults import FaultProfile, Faults, assign_faults
from sim.files import write_atomically

__all__ = [
    "DEFAULT_LATEST",
    "DEFAULT_MODELS",
    "PALLET_SCHEMA",
    "ManifestRow",
    "Pallet",
    "PalletError",
    "PalletHub",
    "default_counts",
    "load_pallet",
    "make_pallet",
    "manifest_csv",
    "manifest_path_for",
    "write_pallet",
]

PALLET_SCHEMA: Final = "jigsim.pallet/1"
DEFAULT_MODELS: Final = (DeviceModel(0x1086, 0x57310102),)
DEFAULT_LATEST: Final = FirmwareVersion(0x04000007)
GUID_PREFIX: Final = 0x00DB << 48  # a made-up OUI-like prefix: simulated hubs are easy to spot
MANIFEST_HEADER: Final = ("guid", "manufacturer", "model", "firmware_version")


class PalletError(ValueError):
    """A pallet file that cannot be read; the message names the file and the field."""


class ManifestRow(BaseModel):
    """A hub as the sending party declared it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guid: GuidField
    model: DeviceModelField
    firmware_version: FirmwareVersionField


class PalletHub(ManifestRow):
    """A hub physically on the pallet."""

    listed: bool = True
    faults: Faults = Faults()


class Pallet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_id: Literal["jigsim.pallet/1"] = Field(default=PALLET_SCHEMA, alias="schema")
    seed: int = 0
    fault_profile: FaultProfile = FaultProfile.NONE
    latest: dict[str, FirmwareVersionField] = Field(default_factory=dict)
    hubs: list[PalletHub]
    missing: list[ManifestRow] = Field(default_factory=list)

    def manifest(self) -> list[ManifestRow]:
        """The sending party's manifest: listed hubs on the pallet and the missing ones."""
        rows = [
            ManifestRow(guid=h.guid, model=h.model, firmware_version=h.firmware_version)
            for h in self.hubs
            if h.listed
        ]
        return sorted([*rows, *self.missing], key=lambda row: row.guid)


def default_counts(hubs: int) -> tuple[int, int, int]:
    """(missing, extra, current) when not given: about 2%, 2% and 5% of the hubs, at least 1."""
    if hubs < 10:
        return 0, 0, min(1, hubs)
    return max(1, round(hubs * 0.02)), max(1, round(hubs * 0.02)), max(1, round(hubs * 0.05))


def _older_versions(latest: FirmwareVersion) -> list[FirmwareVersion]:
    """A few plausible versions below `latest`, as an estate accumulates them."""
    major, minor, revision, build = latest.mcuboot
    older = set()
    if build > 0:
        older.add((major, minor, revision, build - 1))
    if revision > 0:
        older.add((major, minor, revision - 1, build))
    if minor > 0:
        older.add((major, minor - 1, 0, build))
    if major > 0:
        older |= {(major - 1, 0, 0, build), (major - 1, 2, 0, 3)}
    versions = sorted(FirmwareVersion.from_mcuboot(*parts) for parts in older)
    return versions or [FirmwareVersion(0)]


def make_pallet(
    hubs: int,
    *,
    seed: int = 0,
    missing: int | None = None,
    extra: int | None = None,
    current: int | None = None,
    models: Sequence[DeviceModel] = DEFAULT_MODELS,
    latest: dict[DeviceModel, FirmwareVersion] | None = None,
    fault_profile: FaultProfile | str = FaultProfile.NONE,
) -> Pallet:
    """A pallet of `hubs` hubs; counts not given take `default_counts`."""
    default_missing, default_extra, default_current = default_counts(hubs)
    missing = default_missing if missing is None else missing
    extra = default_extra if extra is None else extra
    current = default_current if current is None else current
    if hubs < 0 or missing < 0 or extra < 0 or current < 0:
        raise ValueError("hub counts cannot be negative")
    if extra > hubs or current > hubs:
        raise ValueError(f"a pallet of {hubs} hubs cannot have {extra} extra or {current} current")
    if not models:
        raise ValueError("give at least one Device Model")
    latest_of = {m: (latest or {}).get(m, DEFAULT_LATEST) for m in models}
    profile = FaultProfile(fault_profile)
    rng = random.Random(f"jigsim pallet {seed}")  # noqa: S311 - test data, not crypto
    guids: set[int] = set()
    while len(guids) < hubs + missing:
        guids.add(GUID_PREFIX | rng.getrandbits(48))
    ordered = [Guid(v) for v in sorted(guids)]
    rng.shuffle(ordered)
    present, absent = ordered[:hubs], ordered[hubs:]
    unlisted = set(rng.sample(range(hubs), extra))
    up_to_date = set(rng.sample(range(hubs), current))
    pallet_hubs = []
    for index, guid in enumerate(present):
        model = models[index % len(models)]
        version = (
            latest_of[model]
            if index in up_to_date
            else rng.choice(_older_versions(latest_of[model]))
        )
        pallet_hubs.append(
            PalletHub(
                guid=guid,
                model=model,
                firmware_version=version,
                listed=index not in unlisted,
                faults=assign_faults(profile, seed, str(guid)),
            )
        )
    missing_rows = [
        ManifestRow(
            guid=guid,
            model=models[index % len(models)],
            firmware_version=rng.choice(_older_versions(latest_of[models[index % len(models)]])),
        )
        for index, guid in enumerate(absent)
    ]
    return Pallet(
        seed=seed,
        fault_profile=profile,
        latest={str(m): v for m, v in latest_of.items()},
        hubs=pallet_hubs,
        missing=missing_rows,
    )


def manifest_csv(pallet: Pallet) -> str:
    """The manifest as CSV text with a header row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_HEADER)
    for row in pallet.manifest():
        writer.writerow(
            (
                str(row.guid),
                row.model.manufacturer_hex,
                row.model.model_hex,
                str(row.firmware_version),
            )
        )
    return out.getvalue()


def manifest_path_for(pallet_path: Path) -> Path:
    """Where the manifest of a pallet file goes: `pallet.json` -> `pallet.manifest.csv`."""
    return pallet_path.with_name(f"{pallet_path.stem}.manifest.csv")


def write_pallet(pallet: Pallet, path: Path, manifest: Path | None = None) -> Path:
    """Write the pallet JSON at `path` and its manifest CSV; return the manifest's path."""
    manifest = manifest or manifest_path_for(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = pallet.model_dump(mode="json", by_alias=True)
    for hub, entry in zip(pallet.hubs, document["hubs"], strict=True):
        # Only the faults that are set (and the seed), so a reader sees them at a glance.
        entry["faults"] = hub.faults.model_dump(mode="json", exclude_defaults=True)
        entry["faults"]["seed"] = hub.faults.seed
    write_atomically(path, (json.dumps(document, indent=2) + "\n").encode(), fsync=False)
    write_atomically(manifest, manifest_csv(pallet).encode(), fsync=False)
    return manifest


def load_pallet(path: Path) -> Pallet:
    """Read a pallet file; PalletError names the file and each bad field."""
    try:
        raw = json.loads(path.read_bytes())
    except OSError as exc:
        raise PalletError(f"{path}: cannot read it: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PalletError(f"{path}: not JSON: {exc}") from exc
    try:
        pallet = Pallet.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise PalletError(f"{path}: " + "; ".join(problems)) from None
    seen: set[Guid] = set()
    for index, hub in enumerate(pallet.hubs):
        if hub.guid in seen:
            raise PalletError(f"{path}: hubs.{index}.guid: {hub.guid} appears twice")
        seen.add(hub.guid)
    return pallet
