"""The firmware catalog: signed MCUboot images and the latest production firmware per model.

`Catalog.open(directory)` reads a catalog directory; `select` applies the selection rule,
`image` hands out verified image bytes, `reload(verify=True)` keeps entries whose image fails
its checks from being selected (`untrusted`, `distrust`), `add` and `set_status` write atomically.
"""

from firmware_catalog.catalog import Catalog, Image, Untrusted
from firmware_catalog.entry import CatalogEntry, Status
from firmware_catalog.errors import (
    CatalogError,
    CatalogFileError,
    EntryError,
    ImageError,
    SelectionCode,
    SelectionError,
    TrustedKeyError,
)

__all__ = [
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "CatalogFileError",
    "EntryError",
    "Image",
    "ImageError",
    "SelectionCode",
    "SelectionError",
    "Status",
    "TrustedKeyError",
    "Untrusted",
]
