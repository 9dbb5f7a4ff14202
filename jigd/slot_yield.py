"""Slot yield watch: which slot fails hubs significantly more often than the rest of its rig.

A worn pogo pin or a bad cable quietly fails hub after hub in one slot. For each slot the watch
keeps its last `window_hubs` results (from the station's results as they are recorded, rebuilt
from the open batches' results at start: the store already holds rig, slot and outcome per
GUID), and after each result tests the slot against the other slots of its rig: with k failures
in the slot's n hubs and the rest of the rig failing at p (k' of n' hubs, smoothed as
(k' + 1) / (n' + 2) so a rig that never failed does not make one failure a certainty), the slot
is suspect when n is at least `min_hubs` and the one-sided exact binomial tail P[X >= k | n, p]
is below (1 - confidence) / (slots of the rig x window_hubs). That divisor is the number of
checks the rig makes while each of its slots finishes a window of hubs (Bonferroni: over such a
stretch, a healthy rig raises a false alarm with probability at most about 1 - confidence; the
tests measure it). A suspect slot is alerted once; it recovers when its tail rises to
1 - confidence or above.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from jigd.config import SlotYieldConfig
from jigd.events import BatchStatus, GuidResult
from jigd.model import DeviceModel, Outcome, Stage
from jigd.store import GuidState, Store

__all__ = ["HubYield", "SlotCounts", "SlotYieldWatch", "Suspicion", "binomial_tail"]


def binomial_tail(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p), summed in log space (no underflow for large n)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
        + (n - i) * log_q
        for i in range(k, n + 1)
    ]  # fmt: skip
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


@dataclass(frozen=True, slots=True)
class HubYield:
    """What one hub's result says about its slot."""

    model: DeviceModel | None
    failed: bool
    first_pass: bool  # a good outcome at the first attempt
    stage: Stage | None = None
    code: str | None = None

    @classmethod
    def of(cls, result: GuidResult | GuidState) -> HubYield:
        """A result as it is recorded, or as the store gives it back."""
        failed = result.outcome is Outcome.FAILED
        return cls(
            model=result.model,
            failed=failed,
            first_pass=not failed and result.attempts == 1,
            stage=result.failure_stage,
            code=result.failure_code,
        )


@dataclass(frozen=True, slots=True)
class SlotCounts:
    """A slot's window: hubs, first-pass successes, failures, and failures by stage:code."""

    hubs: int = 0
    first_pass: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, hubs: Iterable[HubYield]) -> SlotCounts:
        seen = list(hubs)
        causes = Counter(f"{h.stage}:{h.code}" for h in seen if h.failed)
        return cls(
            hubs=len(seen),
            first_pass=sum(h.first_pass for h in seen),
            failed=sum(h.failed for h in seen),
            failures=dict(causes),
        )


@dataclass(frozen=True, slots=True)
class Suspicion:
    """A slot that became suspect (`reason` says why) or recovered (`reason` None)."""

    rig: int
    slot: int
    reason: str | None
    p_value: float


class SlotYieldWatch:
    """Every slot's recent results and which slots are suspect; in memory, fed by `add`."""

    def __init__(self, config: SlotYieldConfig, slots: dict[int, list[int]]) -> None:
        self._config = config
        self._alpha = 1.0 - config.confidence
        self._recent: dict[tuple[int, int], deque[HubYield]] = {
            (rig, slot): deque(maxlen=config.window_hubs)
            for rig, numbers in slots.items()
            for slot in numbers
        }
        self._failed: dict[tuple[int, int], int] = dict.fromkeys(self._recent, 0)
        self._suspect: dict[tuple[int, int], str] = {}

    async def rebuild(self, store: Store) -> list[Suspicion]:
        """Count the open batches' results, in the order they finished (at start); the slots
        found suspect."""
        finished = [
            (state.finished, state)
            for batch in await store.list_batches(BatchStatus.OPEN)
            for state in await store.batch_results(batch.batch_id)
            if state.finished is not None
        ]
        finished.sort(key=lambda pair: pair[0])
        for _, state in finished:
            self.add(state)
        return [
            Suspicion(rig, slot, reason, self.p_value(rig, slot))
            for (rig, slot), reason in self._suspect.items()
        ]

    def suspect(self, rig: int, slot: int) -> str | None:
        """Why the slot is suspect, or None."""
        return self._suspect.get((rig, slot))

    def counts(self, rig: int, slot: int, model: DeviceModel | None = None) -> SlotCounts:
        """The slot's window, of every Device Model or of `model` only."""
        recent = self._recent.get((rig, slot), ())
        return SlotCounts.of(h for h in recent if model is None or h.model == model)

    def add(self, result: GuidResult | GuidState) -> Suspicion | None:
        """Count a slot's result (a hub's final outcome); a change of the slot's verdict, if
        there is one. Results of no slot (not_received) or of a slot not configured are left
        out."""
        if result.rig is None or result.slot is None:
            return None
        key = (result.rig, result.slot)
        recent = self._recent.get(key)
        if recent is None or result.outcome in (None, Outcome.NOT_RECEIVED):
            return None
        hub = HubYield.of(result)
        if len(recent) == recent.maxlen and recent[0].failed:
            self._failed[key] -= 1  # it leaves the window
        recent.append(hub)
        self._failed[key] += hub.failed
        return self._judge(*key)

    def p_value(self, rig: int, slot: int) -> float:
        """P[X >= the slot's failures | its hubs, the rest of the rig's failure rate]."""
        others = [key for key in self._recent if key[0] == rig and key[1] != slot]
        hubs = sum(len(self._recent[key]) for key in others)
        failed = sum(self._failed[key] for key in others)
        p_rig = (failed + 1) / (hubs + 2)
        return binomial_tail(self._failed[(rig, slot)], len(self._recent[(rig, slot)]), p_rig)

    def _judge(self, rig: int, slot: int) -> Suspicion | None:
        key = (rig, slot)
        hubs = len(self._recent[key])
        if hubs < self._config.min_hubs:
            return None
        p = self.p_value(rig, slot)
        checks = sum(1 for r, _ in self._recent if r == rig) * self._config.window_hubs
        if key not in self._suspect and p < self._alpha / checks:
            counts = self.counts(rig, slot)
            causes = ", ".join(f"{c} x{n}" for c, n in sorted(counts.failures.items()))
            reason = (
                f"{counts.failed} of its last {hubs} hubs failed ({causes}), significantly more "
                f"than the rest of the rig (p = {p:.2g})"
            )
            self._suspect[key] = reason
            return Suspicion(rig, slot, reason, p)
        if key in self._suspect and p >= self._alpha:
            del self._suspect[key]
            return Suspicion(rig, slot, None, p)
        return None
