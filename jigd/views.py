"""The control API's views of a station's slots (docs/control-api.md): built from a slot's live
status by the control API (jigd.control), the web view's feed, and the heartbeat that shows a
station's slots to the other stations of its site (jigd.heartbeat)."""

from __future__ import annotations

import time

from jigd import control_api as api
from jigd.events import SlotStatus
from jigd.selftest import SelftestOutcome
from jigd.store import SelftestRun, SlotService

__all__ = ["selftest_view", "service_view", "slot_view"]


def service_view(service: SlotService) -> api.ServiceView:
    return api.ServiceView(
        rig=service.rig,
        slot=service.slot,
        disabled=service.disabled,
        reason=service.reason,
        by=service.by,
        at=service.at,
    )


def selftest_view(run: SelftestRun, outcome: SelftestOutcome | None = None) -> api.SelftestView:
    return api.SelftestView(
        rig=run.rig,
        ts=run.ts,
        failed=run.failed,
        checks=[
            api.CheckView(slot=c.slot, check=c.check, passed=c.passed, detail=c.detail)
            for c in run.checks
        ],
        skipped=list(outcome.skipped) if outcome else [],
        disabled=list(outcome.disabled) if outcome else [],
    )


def slot_view(
    status: SlotStatus, disabled: SlotService | None = None, suspect: str | None = None
) -> api.SlotView:
    """The slot's status as the API shows it: `disabled` while it is out of service, `suspect`
    why the yield watch suspects it."""
    now = time.monotonic()
    return api.SlotView(
        rig=status.rig,
        slot=status.slot,
        state=status.state,
        guid=status.guid,
        batch=status.batch_id,
        stage=status.stage,
        progress=round(status.progress, 1),
        attempts=status.attempts,
        outcome=status.outcome,
        detail=status.detail,
        seconds_in_state=round(now - status.since, 1),
        model=status.model,
        elapsed_s=None if status.hub_since is None else round(now - status.hub_since, 1),
        expected_s=None if status.expected_s is None else round(status.expected_s, 1),
        wait=None
        if status.wait is None
        else api.WaitView(
            what=status.wait.what,
            waited_s=round(now - status.wait.since, 1),
            limit_s=status.wait.limit_s,
        ),
        disabled=None if disabled is None else service_view(disabled),
        suspect=suspect,
    )
