"""The firmware catalog: a directory of signed images and the index that says what to flash.

Layout: `catalog.json` (the index), `images/<sha256>.bin` (content-addressed MCUboot images),
`keys/<manufacturer>.pem` (trusted public keys, manufacturer as 4 upper-case hex characters).
Readers never lock: catalog.json is only ever replaced by rename. Writers hold an exclusive
lock on `.lock`.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from firmware_catalog import storage
from firmware_catalog.entry import (
    CATALOG_SCHEMA,
    CatalogEntry,
    Status,
    dump_catalog,
    parse_catalog,
    validation_problems,
)
from firmware_catalog.errors import (
    CatalogError,
    EntryError,
    ImageError,
    SelectionCode,
    SelectionError,
    TrustedKeyError,
)
from firmware_catalog.mcuboot import (
    TrustedKey,
    check_image,
    file_sha256,
    load_trusted_key,
    read_image_hash,
)
from jigd.model import DeviceModel, FirmwareVersion

__all__ = ["CATALOG_FILE", "IMAGES_DIR", "KEYS_DIR", "Catalog", "Image", "Untrusted"]

_LOGGER = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
IMAGES_DIR = "images"
KEYS_DIR = "keys"
LOCK_FILE = ".lock"


@dataclass(frozen=True, slots=True, eq=False)
class Image:
    """An image's bytes, checked against its entry's sha256 when handed out.

    `data` is a read-only view of the one memory mapping of the file that every caller shares:
    slice it, do not copy it whole.
    """

    entry: CatalogEntry
    data: memoryview

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class Untrusted:
    """An entry that is never selected until the catalog is read again, and why.

    `code` is `image_untrusted` for an entry that failed verification when the catalog was read
    (`Catalog.reload(verify=True)`), or the failure code given to `distrust` (a flash that
    failed because of the image). `reason` says what failed, for a person.
    """

    entry: CatalogEntry
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Mapping:
    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns of the file
    view: memoryview


class _Index:
    """Entries sorted, per Device Model, and the latest selectable ones precomputed.

    `untrusted` holds the entries never to select (by key); it only grows until the next read
    of catalog.json builds a new index.
    """

    def __init__(
        self, entries: Iterable[CatalogEntry], untrusted: Iterable[Untrusted] = ()
    ) -> None:
        self.untrusted = {u.entry.key: u for u in untrusted}
        self.all = tuple(sorted(entries, key=lambda e: e.key))
        self.by_key = {entry.key: entry for entry in self.all}
        by_model: dict[DeviceModel, list[CatalogEntry]] = {}
        self.latest_production: dict[DeviceModel, CatalogEntry] = {}
        self.latest_with_pilot: dict[DeviceModel, CatalogEntry] = {}
        for entry in self.all:  # ascending versions: the last one written wins
            model = entry.device_model
            by_model.setdefault(model, []).append(entry)
            if entry.status == Status.PRODUCTION:
                self.latest_production[model] = entry
            if entry.status in (Status.PRODUCTION, Status.PILOT):
                self.latest_with_pilot[model] = entry
        self.by_model = {model: tuple(es) for model, es in by_model.items()}


class Catalog:
    """A catalog directory: its entries, the selection rule, verified images, and writes."""

    def __init__(self, directory: Path, entries: Iterable[CatalogEntry] = ()) -> None:
        """Use `Catalog.open`; this holds `entries` as given, without reading the directory."""
        self._directory = directory
        self._index = _Index(entries)
        self._mappings: dict[str, _Mapping] = {}
        self._mappings_lock = threading.Lock()

    @classmethod
    def open(cls, directory: Path, *, verify: bool = False) -> Catalog:
        """Read a catalog directory; a directory without catalog.json is an empty catalog.

        With `verify`, every entry's image is checked as `reload(verify=True)` does.
        """
        catalog = cls(directory)
        catalog.reload(verify=verify)
        return catalog

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def catalog_path(self) -> Path:
        return self._directory / CATALOG_FILE

    @property
    def images_dir(self) -> Path:
        return self._directory / IMAGES_DIR

    @property
    def keys_dir(self) -> Path:
        return self._directory / KEYS_DIR

    def image_path(self, entry: CatalogEntry) -> Path:
        return self.images_dir / entry.image_name

    def key_path(self, manufacturer: int) -> Path:
        return self.keys_dir / f"{manufacturer:04X}.pem"

    # Reading and selection.

    def reload(self, *, verify: bool = False) -> None:
        """Re-read catalog.json; on error the entries held so far stay in use.

        Entries written before the catalog recorded MCUboot image hashes (schema 1) are
        migrated: the hash is read from each image and catalog.json rewritten atomically.

        With `verify` (the daemon), the image of every entry not withdrawn is checked as `check`
        does (sha256 and size, signature by the manufacturer's trusted key, header version,
        image hash): an entry that fails is kept but never selected (`untrusted()`, `select`
        raises `image_untrusted`). This reads every image: call it from a thread, not an event loop.
        The entries held so far stay in use until the new ones are checked.
        """
        entries = self._read_entries()
        if any(entry.image_hash is None for entry in entries):
            entries = self._migrate_image_hashes()
        untrusted: list[Untrusted] = []
        if verify:
            untrusted = [
                Untrusted(entry, str(SelectionCode.IMAGE_UNTRUSTED), exc.reason)
                for entry, exc in self._check_entries(
                    e for e in entries if e.status is not Status.WITHDRAWN
                )
            ]
            for bad in untrusted:
                _LOGGER.error(
                    "catalog %s: %s (sha256 %s) is not trusted, never selected: %s",
                    self.catalog_path,
                    bad.entry.describe(),
                    bad.entry.sha256,
                    bad.reason,
                )
        self._set_entries(entries, untrusted)
        _LOGGER.info(
            "catalog %s: %d entries%s",
            self.catalog_path,
            len(entries),
            f", {len(untrusted)} untrusted" if verify else "",
        )

    def _migrate_image_hashes(self) -> list[CatalogEntry]:
        """Record each entry's image hash, read from its image; rewrite catalog.json if allowed.

        An entry whose image cannot be read keeps no hash (it cannot be flashed; `jigd catalog
        verify` names it). A read-only catalog is migrated in memory only.
        """
        with ExitStack() as stack:
            try:
                stack.enter_context(self._write_lock())
                writable = True
            except OSError as exc:
                _LOGGER.warning(
                    "catalog %s: cannot lock it (%s): image hashes recorded in memory only",
                    self.catalog_path,
                    exc.strerror,
                )
                writable = False
            entries = self._read_entries()
            migrated = [self._with_image_hash(entry) for entry in entries]
            if writable and migrated != entries:
                try:
                    storage.write_atomic(self.catalog_path, dump_catalog(migrated))
                except OSError as exc:
                    _LOGGER.warning(
                        "catalog %s: cannot rewrite it (%s): image hashes recorded in memory only",
                        self.catalog_path,
                        exc.strerror,
                    )
                else:
                    _LOGGER.info("catalog %s: migrated to %s", self.catalog_path, CATALOG_SCHEMA)
        return migrated

    def _with_image_hash(self, entry: CatalogEntry) -> CatalogEntry:
        if entry.image_hash is not None:
            return entry
        try:
            image_hash = read_image_hash(self.image_path(entry))
        except ImageError as exc:
            _LOGGER.warning(
                "catalog %s: %s: no image hash recorded: %s",
                self.catalog_path,
                entry.describe(),
                exc,
            )
            return entry
        return entry.model_copy(update={"image_hash": image_hash})

    def entries(self, model: DeviceModel | None = None) -> tuple[CatalogEntry, ...]:
        """All entries, or those of one Device Model, by Device Model then Firmware Version."""
        if model is None:
            return self._index.all
        return self._index.by_model.get(model, ())

    def find(self, model: DeviceModel, version: FirmwareVersion) -> CatalogEntry | None:
        return self._index.by_key.get((model, version))

    def latest(
        self, model: DeviceModel, pilot_models: Collection[DeviceModel] = ()
    ) -> CatalogEntry | None:
        """The highest-version selectable entry for exactly `model`, or None.

        Selectable: `production`, or `pilot` when `model` is in `pilot_models` (the station's
        allowance); `withdrawn` never.
        """
        if model in pilot_models:
            return self._index.latest_with_pilot.get(model)
        return self._index.latest_production.get(model)

    def untrusted(self) -> tuple[Untrusted, ...]:
        """The entries never selected until the catalog is read again, by Device Model and
        Firmware Version."""
        return tuple(sorted(self._index.untrusted.values(), key=lambda u: u.entry.key))

    def distrust(self, entry: CatalogEntry, code: str, reason: str) -> bool:
        """Never select `entry` again until the catalog is read again (a flash failed because
        of its image). True if it was trusted until now; False if it already was not, or is no
        longer in the catalog as given."""
        index = self._index
        if index.by_key.get(entry.key) != entry or entry.key in index.untrusted:
            return False
        index.untrusted[entry.key] = Untrusted(entry, code, reason)
        _LOGGER.error(
            "catalog %s: %s (sha256 %s) is no longer flashed (%s): %s",
            self.catalog_path,
            entry.describe(),
            entry.sha256,
            code,
            reason,
        )
        return True

    def select(
        self,
        model: DeviceModel,
        running: FirmwareVersion,
        pilot_models: Collection[DeviceModel] = (),
    ) -> CatalogEntry:
        """The entry to flash to a hub of `model` running `running`; never a downgrade.

        Returns the latest entry even when the hub runs that version: the caller decides
        "already current" by comparing the hub's active image hash with `entry.sha256`.
        Raises SelectionError `no_firmware`, `newer_than_catalog`, or `image_untrusted` when the
        latest entry is untrusted (`untrusted()`): no older entry is chosen in its place, so a
        bad image stops its Device Model until the image is fixed, or the entry withdrawn, and
        the catalog read again.
        """
        entry = self.latest(model, pilot_models)
        kinds = "production or pilot" if model in pilot_models else "production"
        if entry is None:
            raise SelectionError(
                SelectionCode.NO_FIRMWARE,
                model,
                running,
                f"the catalog {self.catalog_path} has no {kinds} firmware for Device Model {model}",
            )
        if running > entry.firmware_version:
            raise SelectionError(
                SelectionCode.NEWER_THAN_CATALOG,
                model,
                running,
                f"the hub runs {running}, newer than {entry.firmware_version}, the latest "
                f"{kinds} firmware for Device Model {model} in {self.catalog_path}; a hub is "
                "never downgraded",
            )
        untrusted = self._index.untrusted.get(entry.key)
        if untrusted is not None:
            raise SelectionError(
                SelectionCode.IMAGE_UNTRUSTED,
                model,
                running,
                f"the latest {kinds} firmware for Device Model {model}, {entry.firmware_version} "
                f"(sha256 {entry.sha256}), is not trusted ({untrusted.code}: {untrusted.reason}); "
                "no hub of this model is flashed until its image is fixed, or the entry is "
                "withdrawn, and the catalog is reloaded",
            )
        return entry

    # Images.

    def image(self, entry: CatalogEntry) -> Image:
        """The entry's image bytes, from one shared mapping per sha256, re-verified by sha256.

        Hashing costs about a millisecond per MiB and releases the GIL: an event loop may call
        this through `asyncio.to_thread`. Raises ImageError naming the entry if the file is
        missing or changed.
        """
        path = self.image_path(entry)
        with self._mappings_lock:
            mapping = self._mapping(path, entry)
        view = mapping.view
        if len(view) != entry.size or hashlib.sha256(view).hexdigest() != entry.sha256:
            with self._mappings_lock:
                if self._mappings.get(entry.sha256) is mapping:
                    del self._mappings[entry.sha256]
            raise ImageError(
                path,
                "changed on disk: its size or sha256 differs from the catalog; add the image "
                "again or restore the file",
                entry.describe(),
            )
        return Image(entry, view)

    def _mapping(self, path: Path, entry: CatalogEntry) -> _Mapping:
        """The cached mapping of `path`, mapped again if the file was replaced; under the lock."""
        try:
            st = path.stat()
        except FileNotFoundError:
            self._mappings.pop(entry.sha256, None)
            raise ImageError(path, "is missing; add the image again", entry.describe()) from None
        except OSError as exc:
            raise ImageError(path, f"cannot read it: {exc.strerror}", entry.describe()) from exc
        cached = self._mappings.get(entry.sha256)
        if cached is not None and cached.identity == _identity(st):
            return cached
        # The file is mapped, not read: every slot flashing this image shares the same pages.
        # Images are replaced by rename and never written in place, so the mapping stays valid.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ImageError(path, f"cannot read it: {exc.strerror}", entry.describe()) from exc
        try:
            st = os.fstat(fd)
            if st.st_size == 0:
                raise ImageError(path, "changed on disk: it is empty", entry.describe())
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        mapping = _Mapping(_identity(st), memoryview(mapped))
        self._mappings[entry.sha256] = mapping
        return mapping

    def check(self, entry: CatalogEntry, key: TrustedKey | None = None) -> None:
        """Re-check an entry's image fully: sha256 and size, signature and header version."""
        path = self.image_path(entry)
        name = entry.describe()
        if key is None:
            key = self._load_key(entry.device_model.manufacturer, path, name)
        try:
            sha256, size = file_sha256(path)
        except FileNotFoundError:
            raise ImageError(path, "is missing; add the image again", name) from None
        except OSError as exc:
            raise ImageError(path, f"cannot read it: {exc.strerror}", name) from exc
        if sha256 != entry.sha256 or size != entry.size:
            raise ImageError(
                path,
                f"changed on disk: sha256 {sha256} and size {size}, the catalog says "
                f"{entry.sha256} and {entry.size}",
                name,
            )
        key_path = self.key_path(entry.device_model.manufacturer)
        try:
            verified = check_image(path, key, key_path)
        except ImageError as exc:
            raise ImageError(path, exc.reason, name) from exc
        if verified.version != entry.firmware_version:
            raise ImageError(
                path,
                f"header version {verified.version.mcuboot_str()} ({verified.version}) differs "
                f"from the entry's {entry.firmware_version}",
                name,
            )
        if entry.image_hash is not None and verified.image_hash != entry.image_hash:
            raise ImageError(
                path,
                f"image hash {verified.image_hash} differs from the entry's {entry.image_hash}",
                name,
            )

    def verify(self) -> list[ImageError]:
        """Check every entry's image (see `check`); return one error per bad entry."""
        return [exc for _entry, exc in self._check_entries(self._index.all)]

    def _check_entries(
        self, entries: Iterable[CatalogEntry]
    ) -> list[tuple[CatalogEntry, ImageError]]:
        """`check` each entry, each manufacturer's key loaded once: the bad ones and why."""
        keys: dict[int, TrustedKey | TrustedKeyError] = {}
        problems = []
        for entry in entries:
            manufacturer = entry.device_model.manufacturer
            if manufacturer not in keys:
                try:
                    keys[manufacturer] = load_trusted_key(self.key_path(manufacturer), manufacturer)
                except TrustedKeyError as exc:
                    keys[manufacturer] = exc
            key = keys[manufacturer]
            if isinstance(key, TrustedKeyError):
                reason = f"cannot be checked: {key}"
                problems.append(
                    (entry, ImageError(self.image_path(entry), reason, entry.describe()))
                )
                continue
            try:
                self.check(entry, key)
            except ImageError as exc:
                problems.append((entry, exc))
        return problems

    def _load_key(self, manufacturer: int, image: Path, name: str) -> TrustedKey:
        try:
            return load_trusted_key(self.key_path(manufacturer), manufacturer)
        except TrustedKeyError as exc:
            raise ImageError(image, f"cannot be checked: {exc}", name) from exc

    # Writes.

    def add(
        self,
        image: Path,
        model: DeviceModel,
        version: FirmwareVersion,
        status: Status,
        released: date,
        *,
        gbcs: str | None = None,
        chts: str | None = None,
        notes: str = "",
    ) -> CatalogEntry:
        """Check a signed image against the manufacturer's trusted key and add it, atomically.

        Refused (ImageError naming `image`, nothing written): the same Device Model and version
        already in the catalog, no trusted key, not an MCUboot image, no valid signature, or a
        header version other than `version`.
        """
        try:
            # Fields are checked first; the sha256 and size are filled in once the image passes.
            draft = CatalogEntry.for_model(
                model,
                firmware_version=version,
                sha256="0" * 64,
                size=1,
                status=status,
                released=released,
                gbcs=gbcs,
                chts=chts,
                notes=notes,
            )
        except ValidationError as exc:
            raise ImageError(image, "; ".join(validation_problems(exc, None))) from None
        with self._write_lock():
            entries = self._read_entries()
            existing = next((e for e in entries if e.key == draft.key), None)
            if existing is not None:
                raise ImageError(
                    image,
                    f"{self.catalog_path} already has {draft.describe()} (status "
                    f"{existing.status}, sha256 {existing.sha256}); a version is added once",
                )
            key_path = self.key_path(model.manufacturer)
            try:
                key = load_trusted_key(key_path, model.manufacturer)
            except TrustedKeyError as exc:
                raise ImageError(image, f"no usable trusted key: {exc}") from exc
            try:
                source = image.open("rb")
            except OSError as exc:
                raise ImageError(image, f"cannot read it: {exc.strerror}") from exc
            # The copy is checked, not the source, which could change while it is read; it
            # waits next to catalog.json so that a refused image leaves images/ untouched.
            with source:
                temp = storage.copy_to_temp(source, self._directory, "image")
            try:
                verified = check_image(temp, key, key_path, shown_as=image)
                _require_version(image, verified.version, version)
                entry = draft.model_copy(
                    update={
                        "sha256": verified.sha256,
                        "size": verified.size,
                        "image_hash": verified.image_hash,
                    }
                )
                self._make_images_dir()
                storage.install(temp, self.image_path(entry))
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            entries.append(entry)
            storage.write_atomic(self.catalog_path, dump_catalog(entries))
            self._set_entries(entries)
        _LOGGER.info(
            "catalog %s: added %s (%s, %d bytes, sha256 %s)",
            self._directory,
            entry.describe(),
            entry.status,
            entry.size,
            entry.sha256,
        )
        return entry

    def set_status(
        self, model: DeviceModel, version: FirmwareVersion, status: Status
    ) -> CatalogEntry:
        """Change an entry's status (to withdraw or promote it), atomically."""
        with self._write_lock():
            entries = self._read_entries()
            index = next((i for i, e in enumerate(entries) if e.key == (model, version)), None)
            if index is None:
                raise EntryError(
                    self.catalog_path, model, version, "no such entry (see `jigd catalog list`)"
                )
            entry = entries[index]
            if entry.status != status:
                entry = entries[index] = entry.model_copy(update={"status": status})
                storage.write_atomic(self.catalog_path, dump_catalog(entries))
                _LOGGER.info("catalog %s: %s is now %s", self._directory, entry.describe(), status)
            self._set_entries(entries)
        return entry

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        self._require_directory()
        with storage.exclusive_lock(self._directory / LOCK_FILE):
            # Whoever held the lock before us is gone: its temporary files are garbage.
            storage.remove_stale_temp_files(self._directory)
            storage.remove_stale_temp_files(self.images_dir)
            yield

    def _make_images_dir(self) -> None:
        if not self.images_dir.is_dir():
            self.images_dir.mkdir()
            storage.fsync_directory(self._directory)

    def _require_directory(self) -> None:
        if not self._directory.is_dir():
            raise CatalogError(
                f"{self._directory}: the catalog directory does not exist (or is not a directory)"
            )

    def _read_entries(self) -> list[CatalogEntry]:
        self._require_directory()
        try:
            data = self.catalog_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CatalogError(f"{self.catalog_path}: cannot read it: {exc.strerror}") from exc
        return parse_catalog(self.catalog_path, data)

    def _set_entries(
        self, entries: Iterable[CatalogEntry], untrusted: Iterable[Untrusted] | None = None
    ) -> None:
        """Use `entries`; `untrusted` as found by a read, or (None: a write) those held so far
        whose image is the same."""
        entries = list(entries)
        if untrusted is None:
            held = self._index.untrusted
            untrusted = [
                Untrusted(entry, u.code, u.reason)
                for entry in entries
                if (u := held.get(entry.key)) is not None and u.entry.sha256 == entry.sha256
            ]
        index = _Index(entries, untrusted)
        referenced = {entry.sha256 for entry in index.all}
        with self._mappings_lock:
            for sha256 in self._mappings.keys() - referenced:
                del self._mappings[sha256]
        self._index = index


def _require_version(image: Path, found: FirmwareVersion, given: FirmwareVersion) -> None:
    if found != given:
        raise ImageError(
            image,
            f"header version {found.mcuboot_str()} ({found}) differs from the "
            f"version given, {given} ({given.mcuboot_str()})",
        )


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
