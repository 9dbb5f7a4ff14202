"""What a store backend logs after an operation commits, worded once for every backend (each
logs to its own logger: jigd.store.sqlite, jigd.store.postgres)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jigd.events import GuidResult
from jigd.model import Guid, Stage
from jigd.store.values import BatchInfo, InterruptedGuid, SetAsideHub

__all__ = ["closed", "imported", "interrupted", "purged", "recorded", "recovered", "released"]


def imported(
    logger: logging.Logger,
    batch_id: str,
    names: tuple[str, str, str],
    count: int,
    aside: Sequence[SetAsideHub],
) -> None:
    """A batch imported from (source, booking, party), with its hubs to re-insert."""
    source, booking, party = names
    logger.info(
        "batch %s imported from %s: %d GUID(s), booking %s, party %s",
        batch_id,
        source,
        count,
        booking,
        party,
    )
    for hub in aside:
        logger.warning(
            "batch %s: hub %s was rejected in rig %d slot %d before the import: re-insert it",
            batch_id,
            hub.guid,
            hub.rig,
            hub.slot,
        )


def closed(logger: logging.Logger, info: BatchInfo) -> None:
    logger.info(
        "batch %s closed: %s",
        info.batch_id,
        ", ".join(f"{o} {n}" for o, n in info.counts.items()),
    )


def recovered(logger: logging.Logger, found: Sequence[InterruptedGuid]) -> None:
    for item in found:
        logger.warning(
            "batch %s GUID %s: flash interrupted by a restart; it resumes when the hub "
            "is seen again",
            item.batch_id,
            item.guid,
        )


def interrupted(
    logger: logging.Logger, key: tuple[str, Guid, int], stage: Stage, reason: str
) -> None:
    """The attempt (batch, GUID, number) was interrupted."""
    batch_id, guid, attempt = key
    logger.warning(
        "batch %s GUID %s: attempt %d interrupted at stage %s: %s",
        batch_id,
        guid,
        attempt,
        stage,
        reason,
    )


def released(
    logger: logging.Logger,
    key: tuple[str, Guid, int | None],
    where: tuple[int, int],
    stage: Stage,
    reason: str,
) -> None:
    """Rig and slot `where` let go of the GUID (batch, GUID, attempt closed or None)."""
    batch_id, guid, attempt = key
    rig, slot = where
    logger.warning(
        "batch %s GUID %s: rig %d slot %d let go of it (attempt %s closed) at stage %s: %s",
        batch_id,
        guid,
        rig,
        slot,
        attempt if attempt is not None else "none",
        stage,
        reason,
    )


def recorded(logger: logging.Logger, result: GuidResult) -> None:
    logger.info(
        "rig %d slot %d GUID %s: %s (batch %s)",
        result.rig,
        result.slot,
        result.guid,
        result.outcome,
        result.batch_id,
    )


def purged(logger: logging.Logger, outbox: int, journal: int, cutoffs: tuple[str, str]) -> None:
    logger.info(
        "retention purge: %d published outbox row(s) before %s, %d journal event(s) before %s",
        outbox,
        cutoffs[0],
        journal,
        cutoffs[1],
    )
