"""Where the capacity plan's measurements come from: a station's store, config and catalog.

The daemon serves them (`GET /v1/stage-times`, jigd.control); `jigctl plan --offline` reads a
stopped station's store the same way (docs/architecture.md, "Control API").
"""

from __future__ import annotations

from firmware_catalog import Catalog, CatalogError
from jigd.config import StationConfig
from jigd.control_api import StageTimes
from jigd.events import MAX_SLOT
from jigd.plan import PlanError, measure
from jigd.store import Store, open_store
from jigd.store.sqlite import SCHEME, sqlite_path

__all__ = ["offline_stage_times", "stage_times"]


async def stage_times(store: Store, config: StationConfig, catalog: Catalog | None) -> StageTimes:
    """The store's measured times, the config's rigs and the catalog's image sizes."""
    hubs = await store.hub_times()
    sizes = {}
    if catalog is not None:
        for model in {hub.model for hub in hubs}:
            entry = catalog.latest(model, config.pilot_models)
            if entry is not None:
                sizes[model] = entry.size
    slots = max((len(rig.slots) for rig in config.rigs), default=MAX_SLOT)
    return measure(hubs, rigs=len(config.rigs), slots_per_rig=slots, image_bytes=sizes)


async def offline_stage_times(config: StationConfig) -> StageTimes:
    """`stage_times` read straight from the config's store and catalog (the daemon need not
    run); PlanError if the store does not exist."""
    url = config.store_url
    if url.startswith(f"{SCHEME}:") and not sqlite_path(url).is_file():
        raise PlanError(
            f"no store at {sqlite_path(url)} (the config's store): nothing to plan from"
        )
    try:
        catalog: Catalog | None = Catalog.open(config.catalog_dir)
    except CatalogError:
        catalog = None  # the plan then cannot size a what-if upload, and says so
    async with await open_store(url) as store:
        return await stage_times(store, config, catalog)
