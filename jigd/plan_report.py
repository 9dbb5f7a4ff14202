"""The capacity plan for a person: a table with its assumptions, and a PNG chart of hubs an
hour per rig against the plan's rate (matplotlib, the optional `[plan]` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

from jigd.control_api import StageTimes
from jigd.plan import Plan, PlanError

__all__ = ["check_chart_support", "render_plan", "write_chart"]

HOUR_DAYS: Final = 1 / 24  # an hour in matplotlib's date unit (days): a margin either side


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_plan(plan: Plan) -> str:
    """The plan as text: per Device Model, the totals, the rigs needed, the assumptions."""
    head = (
        f"{'device model':<16} {'share':>6} {'hubs':>5} {'1st pass':>8} {'retries':>7} "
        f"{'upload s':>8} {'activate s':>10} {'hub s':>6} {'busy s':>7} {'busy p90 s':>10}"
    )
    lines = ["Capacity plan", "", head]
    for m in plan.models:
        lines.append(
            f"{m.model!s:<16} {m.share:>6.1%} {m.hubs_measured:>5} "
            f"{_pct(m.first_pass_yield):>8} {_s(m.retries_per_hub):>7} {_s(m.upload_s):>8} "
            f"{_s(m.activate_s):>10} {_s(m.hub_s):>6} {m.busy_s:>7.2f} {m.busy_p90_s:>10.2f}"
        )
    lines += [
        "",
        f"per hub (typical first-pass reflash): {plan.hub_s:.2f} s",
        f"slot busy per hub (handling included): {plan.busy_s:.2f} s (p90 {plan.busy_p90_s:.2f} s)",
        f"hubs per slot-hour: {plan.hubs_per_slot_hour:.1f}",
        f"hubs per rig-hour at {plan.inputs.utilisation:.0%} utilisation: "
        f"{plan.hubs_per_rig_hour:.1f}",
        f"required: {plan.required_hubs_per_hour:.1f} hubs per working hour",
        f"slots needed: {plan.slots_needed:.1f}",
        f"rigs needed: {plan.rigs_needed} (with p90 times: {plan.rigs_needed_p90})",
        "",
        "Assumptions:",
        *(f"- {line}" for line in plan.assumptions),
    ]
    return "\n".join(lines)


def check_chart_support() -> None:
    """PlanError unless matplotlib is installed (the `[plan]` extra)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise PlanError("--chart needs matplotlib: pip install 'jigd[plan]'")


def write_chart(times: StageTimes, plan: Plan, path: Path) -> None:
    """A PNG of the hubs each rig finished per clock hour, with the rate a rig must keep for
    the plan (the required rate over the rigs needed) as a line."""
    import matplotlib as mpl

    mpl.use("Agg")  # files only: no display
    from matplotlib import dates
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    try:
        span = dates.date2num([h.hour for h in times.hourly] or [0.0])  # type: ignore[no-untyped-call]  # unannotated in matplotlib
        axes.set_xlim(min(span) - HOUR_DAYS, max(span) + HOUR_DAYS)
        for rig in sorted({h.rig for h in times.hourly}):
            points = [(h.hour, h.hubs) for h in times.hourly if h.rig == rig]
            hours = dates.date2num([p[0] for p in points])  # type: ignore[no-untyped-call]  # unannotated in matplotlib
            axes.plot(hours, [p[1] for p in points], marker="o", label=f"rig {rig}")
        target = plan.required_hubs_per_hour / max(1, plan.rigs_needed)
        axes.axhline(target, color="red", linestyle="--", label=f"plan: {target:.0f} hubs/h a rig")
        axes.xaxis_date()
        axes.set_xlabel("hour (UTC)")
        axes.set_ylabel("hubs finished in the hour")
        axes.set_title(
            f"Hubs per rig and hour; plan: {plan.inputs.hubs_per_year} hubs/year, "
            f"rigs needed: {plan.rigs_needed}"
        )
        axes.legend(loc="best")
        figure.autofmt_xdate()
        figure.tight_layout()
        try:
            figure.savefig(path, format="png")
        except OSError as exc:
            raise PlanError(f"{path}: cannot write the chart: {exc.strerror}") from None
    finally:
        plt.close(figure)
