"""A writer killed at any moment of `add` leaves the old catalog or the new one, nothing else."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from firmware_catalog import Catalog, Status
from jigd.model import FirmwareVersion
from tests.firmware_catalog.helpers import MODEL, MakeImage

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 25
IMAGE_SIZE = 2 << 20  # big enough that copying and hashing take a while
POLL_S = 0.0005
WRITER_TIMEOUT_S = 20.0


def start_add(catalog_dir: Path, image: Path, version: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "jigd.cli", "catalog", "--dir", str(catalog_dir), "add"]
    args += [str(image), "--device-model", str(MODEL), "--version", version]
    args += ["--status", "production", "--released", "2026-01-31"]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def listing(catalog_dir: Path) -> set[Path]:
    return set(catalog_dir.iterdir()) | set((catalog_dir / "images").iterdir())


def wait_for_write_phase(
    writer: subprocess.Popen[bytes], catalog_dir: Path, before: set[Path]
) -> float:
    """Wait until the writer holds the lock and starts copying the image; return when."""
    deadline = time.monotonic() + WRITER_TIMEOUT_S
    while writer.poll() is None and time.monotonic() < deadline:
        if any(p.name.startswith(".jigd-image-") for p in listing(catalog_dir) - before):
            break
        time.sleep(POLL_S)
    return time.monotonic()


def where_killed(catalog_dir: Path, before: set[Path]) -> str:
    """Tell from what a killed writer left behind how far it got; for the test's report."""
    index = Catalog.open(catalog_dir)
    referenced = {index.image_path(e) for e in index.entries()}
    new = listing(catalog_dir) - before
    if any(p.name.startswith(".jigd-image-") for p in new):
        return "copying or checking the image"
    if any(p.name.startswith(".jigd-catalog.json-") for p in new):
        return "writing catalog.json"
    new_images = {p for p in new if p.parent.name == "images"}
    if new_images - referenced:
        return "between image and catalog.json"
    if new_images:
        return "after catalog.json"
    return "before the write phase"


def test_killed_writer_leaves_old_or_new_catalog(catalog_dir: Path, make_image: MakeImage) -> None:
    rng = random.Random(20260131)
    catalog = Catalog.open(catalog_dir)
    catalog.add(
        make_image("04000001", size=IMAGE_SIZE),
        MODEL,
        FirmwareVersion.parse("04000001"),
        Status.PRODUCTION,
        date(2026, 1, 31),
    )

    # Calibrate: how long the write phase of an uninterrupted add lasts on this machine.
    image = make_image("04000002", size=IMAGE_SIZE)
    before = listing(catalog_dir)
    index_before = (catalog_dir / "catalog.json").stat().st_ino
    started = time.monotonic()
    writer = start_add(catalog_dir, image, "04000002")
    seen = wait_for_write_phase(writer, catalog_dir, before)
    while (catalog_dir / "catalog.json").stat().st_ino == index_before and writer.poll() is None:
        time.sleep(POLL_S)
    write_phase_s = max(time.monotonic() - seen, 0.002)
    assert writer.wait(WRITER_TIMEOUT_S) == 0
    whole_s = time.monotonic() - started

    outcomes: dict[str, int] = {}
    for i in range(ITERATIONS):
        old = Catalog.open(catalog_dir).entries()
        before = listing(catalog_dir)
        version = f"{0x04000003 + i:08X}"
        writer = start_add(catalog_dir, make_image(version, size=IMAGE_SIZE), version)
        # Half the kills land anywhere from start-up on, half inside the write phase.
        if i % 2:
            wait_for_write_phase(writer, catalog_dir, before)
            time.sleep(rng.uniform(0, write_phase_s * 1.2))
        else:
            time.sleep(rng.uniform(0, whole_s))
        writer.send_signal(signal.SIGKILL)
        writer.wait(WRITER_TIMEOUT_S)
        moment = where_killed(catalog_dir, before)
        outcomes[moment] = outcomes.get(moment, 0) + 1

        after = Catalog.open(catalog_dir).entries()  # always loads
        if after != old:
            assert after[:-1] == old
            assert str(after[-1].firmware_version) == version
        # Whatever the catalog references is complete.
        assert Catalog.open(catalog_dir).verify() == []

    # Leftover temporary files do not stop a later add, which removes them.
    final = make_image("05000000", size=4096)
    entry = Catalog.open(catalog_dir).add(
        final, MODEL, FirmwareVersion.parse("05000000"), Status.PRODUCTION, date(2026, 2, 1)
    )
    assert Catalog.open(catalog_dir).latest(MODEL) == entry
    assert list(catalog_dir.rglob("*.tmp")) == []
    assert sum(outcomes.values()) == ITERATIONS
    print(f"kills: {outcomes}; write phase {write_phase_s * 1000:.1f} ms", file=sys.stderr)
