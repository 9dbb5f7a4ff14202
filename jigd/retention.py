"""The store's retention purge, as configured in `[retention]`: the daemon's periodic one and
`jigd store purge` (docs/install.md, "Retention")."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import NoReturn

from jigd.config import RetentionConfig
from jigd.store import PurgeCounts, Store, StoreError

__all__ = ["FIRST_PURGE_DELAY_S", "purge", "purge_every"]

_LOGGER = logging.getLogger(__name__)

# The daemon's first purge waits this long, so a start (or a restart loop) does no purge work.
FIRST_PURGE_DELAY_S = 3600.0


async def purge(store: Store, config: RetentionConfig, *, dry_run: bool = False) -> PurgeCounts:
    """Purge (or count, with `dry_run`) what `config` lets go."""
    return await store.purge(
        outbox_age=timedelta(days=config.outbox_published_days),
        journal_age=timedelta(days=config.journal_days),
        dry_run=dry_run,
    )


async def purge_every(
    store: Store, config: RetentionConfig, first_delay_s: float = FIRST_PURGE_DELAY_S
) -> NoReturn:
    """Purge every `config.purge_every_h` hours (more than 0), the first after `first_delay_s`,
    until cancelled; a store error is logged and the next purge tries again."""
    every_s = 3600.0 * config.purge_every_h
    await asyncio.sleep(first_delay_s)
    while True:
        try:
            await purge(store, config)
        except StoreError as exc:
            _LOGGER.warning("retention purge failed, will retry in %.0f s: %s", every_s, exc)
        await asyncio.sleep(every_s)
