"""Catalog benchmark: latest-entry lookup among 10,000 entries, and 24 slots sharing one image.

Run: .venv/bin/python -m bench.catalog

The index is written directly as JSON (10,000 entries pointing at a few real signed images) so
the set-up is quick; the 1 MiB image is added through `Catalog.add`, as in production.
"""

from __future__ import annotations

import gc
import hashlib
import json
import random
import tempfile
import time
from datetime import date
from pathlib import Path

from firmware_catalog import Catalog, Status
from jigd.model import DeviceModel, FirmwareVersion
from sim.images import make_manufacturer_keys, make_signed_image

ENTRIES = 10_000
SLOTS = 24
IMAGE_SIZE = 1 << 20
MEMORY_TARGET_BYTES = 2 << 20
LOOKUPS = 100_000
UPLOAD_CHUNK = 2048
SEED = 1


def _status_kib() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process, in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0])
    return fields


def _mappings_of(path: Path) -> int:
    maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    return sum(1 for line in maps.splitlines() if line.endswith(str(path)))


def _write_index(directory: Path, models: int, real: list[tuple[str, int]]) -> None:
    """ENTRIES entries over `models` Device Models; 1 in 10 withdrawn, 1 in 7 pilot."""
    rng = random.Random(SEED)
    per_model = ENTRIES // models
    entries = []
    for m in range(models):
        for v in range(per_model):
            sha256, size = rng.choice(real)
            status = "withdrawn" if v % 10 == 9 else "pilot" if v % 7 == 6 else "production"
            entries.append(
                {
                    "manufacturer": "1086",
                    "model": f"{0x57310000 + m:08X}",
                    "firmware_version": f"{0x01000000 + v:08X}",
                    "sha256": sha256,
                    "size": size,
                    "status": status,
                    "released": "2026-01-31",
                }
            )
    document = {"schema": "jigd.catalog/1", "entries": entries}
    (directory / "catalog.json").write_text(json.dumps(document), encoding="utf-8")


def _lookups(directory: Path, models: int) -> None:
    started = time.perf_counter()
    catalog = Catalog.open(directory)
    load_s = time.perf_counter() - started
    rng = random.Random(SEED)
    queries = [DeviceModel(0x1086, 0x57310000 + rng.randrange(models)) for _ in range(LOOKUPS)]
    started = time.perf_counter()
    for model in queries:
        catalog.latest(model)
    latest_us = (time.perf_counter() - started) / LOOKUPS * 1e6
    running = FirmwareVersion(0x01000000)
    started = time.perf_counter()
    for model in queries:
        catalog.select(model, running, (model,))
    select_us = (time.perf_counter() - started) / LOOKUPS * 1e6
    print(
        f"  {len(catalog.entries())} entries over {models} Device Model(s): load "
        f"{load_s * 1000:.0f} ms; latest {latest_us:.2f} us/lookup; select (pilot allowed) "
        f"{select_us:.2f} us/lookup"
    )


def _shared_image(root: Path) -> None:
    keys = make_manufacturer_keys(0x1086, SEED)
    directory = root / "shared"
    (directory / "keys").mkdir(parents=True)
    (directory / "keys" / "1086.pem").write_bytes(keys.public_pem())
    model, version = DeviceModel.parse("1086/57310102"), FirmwareVersion.parse("04000007")
    source = root / "image.bin"
    source.write_bytes(make_signed_image(keys, model, version, IMAGE_SIZE, SEED))
    catalog = Catalog.open(directory)
    entry = catalog.add(source, model, version, Status.PRODUCTION, date(2026, 1, 31))
    path = catalog.image_path(entry)

    gc.collect()
    before = _status_kib()
    slots = [catalog.image(entry) for _ in range(SLOTS)]
    for image in slots:  # each slot reads every byte, chunk by chunk, as an upload does
        digest = hashlib.sha256()
        for offset in range(0, len(image), UPLOAD_CHUNK):
            digest.update(image.data[offset : offset + UPLOAD_CHUNK])
    after = _status_kib()
    growth = {name: after[name] - before[name] for name in before}
    verdict = "OK" if growth["VmRSS"] * 1024 < MEMORY_TARGET_BYTES else "OVER TARGET"
    print(
        f"  {SLOTS} slots holding one {IMAGE_SIZE >> 20} MiB image: RSS +{growth['VmRSS']} KiB "
        f"(file-backed +{growth['RssFile']} KiB, anonymous +{growth['RssAnon']} KiB), "
        f"{_mappings_of(path)} mapping(s) of the file; target < {MEMORY_TARGET_BYTES >> 10} KiB: "
        f"{verdict}"
    )
    del slots

    gc.collect()
    before = _status_kib()
    copies = [path.read_bytes() for _ in range(SLOTS)]
    after = _status_kib()
    print(
        f"  for comparison, {SLOTS} private copies (read_bytes): RSS "
        f"+{after['VmRSS'] - before['VmRSS']} KiB"
    )
    del copies


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="jigd-bench-catalog-") as scratch:
        root = Path(scratch)
        keys = make_manufacturer_keys(0x1086, SEED)
        real = []
        for i in range(3):
            data = make_signed_image(
                keys, DeviceModel(0x1086, 0x57310000), FirmwareVersion(0x01000000 + i), 8192, i
            )
            real.append((hashlib.sha256(data).hexdigest(), len(data)))
        print("Catalog: latest-entry lookup")
        for models in (100, 1):
            directory = root / f"index-{models}"
            directory.mkdir()
            _write_index(directory, models, real)
            _lookups(directory, models)
        print("Catalog: memory of slots sharing one image")
        _shared_image(root)


if __name__ == "__main__":
    main()
