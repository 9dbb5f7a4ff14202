"""The capacity plan: how many rigs a yearly volume needs, from the times the store measured.

The model, per Device Model m (times in seconds, from `measure`, the control API's
`StageTimes`):

- a typical hub, reflashed at its first attempt, takes `hub_m = upload_m + activate_m`, the
  medians of its last attempt's two spans (start to the end of the upload; then to the result);
- a hub keeps its slot busy, on average, `busy_m = r_m * hub_m + c_m * check_m + f_m * failing_m
  + retry_m + handling`: the shares of reflashed (r), already current (c) and failed (f) hubs
  times their median times, the mean time spent before a hub's last attempt (earlier attempts
  and the power cycles between them), and the operator's handling (pull one hub, insert the
  next); the same with the p90 times gives a cautious figure;
- `--what-if baud=B` replaces `upload_m` by the physical bound of the upload at B baud: the
  SMP upload requests of the model's latest image, each filling `frame` bytes, framed (raw or
  console), at 10 bits per byte (`drivers.framing`, as sim.timing.physical_bound counts them);
  the measured span also held the few round trips before the upload (authorize to unlock), so
  this is a lower bound of it.

Over the Device Model mix (shares summing to 1, measured or given): `busy = sum(share_m *
busy_m)`; a slot does `3600 / busy` hubs an hour; the volume needs `hubs_per_year / (days *
hours_per_day)` hubs an hour; at a target utilisation u (the share of the working hours slots
are busy flashing) that is `rate * busy / 3600 / u` slots, and rigs = ceil(slots / slots per
rig). Pure arithmetic: no I/O.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from drivers.framing import framing_for, upload_frame_sizes
from jigd.control_api import ModelTimes, RigHour, StageTime, StageTimes
from jigd.model import DeviceModel, Outcome
from jigd.store import HubTimes

__all__ = [
    "DEFAULT_FRAME_BYTES",
    "BaudWhatIf",
    "ModelPlan",
    "Plan",
    "PlanError",
    "PlanInputs",
    "make_plan",
    "measure",
    "parse_mix",
    "parse_what_if",
    "wire_s",
]

BITS_PER_BYTE: Final = 10  # 8N1 serial: start bit, 8 data bits, stop bit
DEFAULT_FRAME_BYTES: Final = 2048  # an SMP request as large as a default hub's buf_size
SHARE_TOLERANCE: Final = 1e-6  # how far from 1 a mix's shares may sum
ROUNDING: Final = 1e-9  # float noise ignored when rounding slots up to whole rigs


class PlanError(ValueError):
    """Input the plan cannot use; the message names what and where."""


class BaudWhatIf(BaseModel):
    """Upload at another link speed: the wire time of the image at `baud` in place of the
    measured upload span."""

    model_config = ConfigDict(frozen=True)

    baud: int = Field(gt=0)
    framing: str = "raw"
    frame_bytes: int = Field(default=DEFAULT_FRAME_BYTES, ge=64)


class PlanInputs(BaseModel):
    """What the plan is asked: the volume, the working time and how hubs are handled."""

    model_config = ConfigDict(frozen=True)

    hubs_per_year: int = Field(gt=0)
    days: float = Field(gt=0)
    hours_per_day: float = Field(gt=0, le=24)
    handling_s: float = Field(default=20.0, ge=0)
    utilisation: float = Field(default=0.85, gt=0, le=1)
    mix: dict[DeviceModel, float] | None = None  # None: the mix measured in the store
    what_if: BaudWhatIf | None = None


class ModelPlan(BaseModel):
    """One Device Model's share of the plan (seconds)."""

    model: DeviceModel
    share: float
    hubs_measured: int
    first_pass_yield: float | None
    retries_per_hub: float | None
    upload_s: float | None
    activate_s: float | None
    hub_s: float | None = Field(description="a typical hub reflashed at its first attempt")
    busy_s: float = Field(description="mean slot time per hub, median times, handling included")
    busy_p90_s: float = Field(description="the same with p90 times")


class Plan(BaseModel):
    """The plan and every assumption it rests on."""

    inputs: PlanInputs
    slots_per_rig: int
    models: list[ModelPlan]
    hub_s: float = Field(description="a typical first-pass reflash over the mix (no handling)")
    busy_s: float = Field(description="slot time per hub over the mix, handling included")
    busy_p90_s: float
    hubs_per_slot_hour: float
    required_hubs_per_hour: float
    hubs_per_rig_hour: float = Field(description="at the target utilisation")
    slots_needed: float
    rigs_needed: int
    rigs_needed_p90: int
    assumptions: list[str]


def _stage(values: Sequence[float]) -> StageTime | None:
    if not values:
        return None
    p90 = (
        values[0] if len(values) == 1 else statistics.quantiles(values, n=10, method="inclusive")[8]
    )
    return StageTime(
        count=len(values), median_s=round(statistics.median(values), 6), p90_s=round(p90, 6)
    )


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def measure(
    hubs: Sequence[HubTimes],
    *,
    rigs: int,
    slots_per_rig: int,
    image_bytes: Mapping[DeviceModel, int] | None = None,
) -> StageTimes:
    """The measured times per Device Model (`Store.hub_times`), the station's rigs and slots,
    and hubs finished per rig and clock hour."""
    by_model: defaultdict[DeviceModel, list[HubTimes]] = defaultdict(list)
    hourly: Counter[tuple[int, datetime]] = Counter()
    for hub in hubs:
        by_model[hub.model].append(hub)
        hourly[hub.rig, hub.finished.replace(minute=0, second=0, microsecond=0)] += 1
    sizes = image_bytes or {}
    models = []
    for model in sorted(by_model):
        rows = by_model[model]
        outcomes = Counter(h.outcome for h in rows)
        reflashed = [h for h in rows if h.outcome is Outcome.REFLASHED and h.uploaded is not None]
        models.append(
            ModelTimes(
                model=model,
                hubs=len(rows),
                reflashed=outcomes[Outcome.REFLASHED],
                already_current=outcomes[Outcome.ALREADY_CURRENT],
                failed=outcomes[Outcome.FAILED],
                first_pass=sum(h.attempts == 1 and h.outcome is not Outcome.FAILED for h in rows),
                retries=sum(h.attempts - 1 for h in rows),
                retry_s=round(
                    statistics.fmean(_seconds(h.started, h.last_started) for h in rows), 6
                ),
                upload=_stage(
                    [_seconds(h.last_started, h.uploaded) for h in reflashed if h.uploaded]
                ),
                activate=_stage(
                    [_seconds(h.uploaded, h.finished) for h in reflashed if h.uploaded]
                ),
                check=_stage(
                    [
                        _seconds(h.last_started, h.finished)
                        for h in rows
                        if h.outcome is Outcome.ALREADY_CURRENT
                    ]
                ),
                failing=_stage(
                    [_seconds(h.started, h.finished) for h in rows if h.outcome is Outcome.FAILED]
                ),
                hub=_stage([_seconds(h.started, h.finished) for h in rows])
                or StageTime(count=0, median_s=0.0, p90_s=0.0),
                image_bytes=sizes.get(model),
            )
        )
    return StageTimes(
        models=models,
        rigs=rigs,
        slots_per_rig=slots_per_rig,
        hourly=[RigHour(rig=r, hour=h, hubs=n) for (r, h), n in sorted(hourly.items())],
    )


def wire_s(image_bytes: int, what_if: BaudWhatIf) -> float:
    """The upload's physical bound at the what-if's baud: its framed request bytes on the wire."""
    framing = framing_for(what_if.framing)
    framed = sum(framing.wire_size(s) for s in upload_frame_sizes(image_bytes, what_if.frame_bytes))
    return framed * BITS_PER_BYTE / what_if.baud


def _time(stage: StageTime | None, p90: bool) -> float:
    if stage is None:
        return 0.0
    return stage.p90_s if p90 else stage.median_s


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _model_plan(times: ModelTimes, share: float, inputs: PlanInputs) -> ModelPlan:
    upload = times.upload
    if inputs.what_if is not None and upload is not None:
        if times.image_bytes is None:
            raise PlanError(
                f"--what-if: Device Model {times.model} has no image in the catalog to size "
                "the upload from"
            )
        bound = wire_s(times.image_bytes, inputs.what_if)
        upload = StageTime(count=upload.count, median_s=bound, p90_s=bound)

    def busy(p90: bool) -> float:
        return (
            _share(times.reflashed, times.hubs) * (_time(upload, p90) + _time(times.activate, p90))
            + _share(times.already_current, times.hubs) * _time(times.check, p90)
            + _share(times.failed, times.hubs) * _time(times.failing, p90)
            + times.retry_s
            + inputs.handling_s
        )

    hub_s = None
    if upload is not None and times.activate is not None:
        hub_s = upload.median_s + times.activate.median_s
    return ModelPlan(
        model=times.model,
        share=share,
        hubs_measured=times.hubs,
        first_pass_yield=_share(times.first_pass, times.hubs) if times.hubs else None,
        retries_per_hub=_share(times.retries, times.hubs) if times.hubs else None,
        upload_s=None if upload is None else upload.median_s,
        activate_s=None if times.activate is None else times.activate.median_s,
        hub_s=hub_s,
        busy_s=busy(p90=False),
        busy_p90_s=busy(p90=True),
    )


def _mix(times: StageTimes, inputs: PlanInputs) -> dict[DeviceModel, float]:
    measured = {m.model: m for m in times.models if m.hubs}
    if inputs.mix is None:
        total = sum(m.hubs for m in measured.values())
        if not total:
            raise PlanError("the store has no hub with an outcome yet: nothing to plan from")
        return {model: m.hubs / total for model, m in measured.items()}
    missing = sorted(str(model) for model in inputs.mix if model not in measured)
    if missing:
        raise PlanError(
            f"model mix: no hub of Device Model {', '.join(missing)} in the store to measure"
        )
    return dict(inputs.mix)


def make_plan(times: StageTimes, inputs: PlanInputs) -> Plan:
    """The plan for `inputs` from the measured `times` (PlanError if they cannot make one)."""
    mix = _mix(times, inputs)
    by_model = {m.model: m for m in times.models}
    models = [_model_plan(by_model[model], share, inputs) for model, share in sorted(mix.items())]
    flashing = [m for m in models if m.hub_s is not None]
    covered = sum(m.share for m in flashing)
    hub_s = sum(m.share * (m.hub_s or 0.0) for m in flashing) / covered if covered else 0.0
    busy_s = sum(m.share * m.busy_s for m in models)
    busy_p90_s = sum(m.share * m.busy_p90_s for m in models)
    if busy_s <= 0:
        raise PlanError("the measured hubs took no time and handling is 0 s: nothing to plan")
    required = inputs.hubs_per_year / (inputs.days * inputs.hours_per_day)
    slots_per_rig = max(1, times.slots_per_rig)

    def slots(busy: float) -> float:
        return required * busy / 3600 / inputs.utilisation

    slots_needed = slots(busy_s)
    return Plan(
        inputs=inputs,
        slots_per_rig=slots_per_rig,
        models=models,
        hub_s=hub_s,
        busy_s=busy_s,
        busy_p90_s=busy_p90_s,
        hubs_per_slot_hour=3600 / busy_s,
        required_hubs_per_hour=required,
        hubs_per_rig_hour=slots_per_rig * inputs.utilisation * 3600 / busy_s,
        slots_needed=slots_needed,
        rigs_needed=math.ceil(slots_needed / slots_per_rig - ROUNDING),
        rigs_needed_p90=math.ceil(slots(busy_p90_s) / slots_per_rig - ROUNDING),
        assumptions=_assumptions(times, inputs, mix, slots_per_rig),
    )


def _assumptions(
    times: StageTimes, inputs: PlanInputs, mix: Mapping[DeviceModel, float], slots_per_rig: int
) -> list[str]:
    measured = sum(m.hubs for m in times.models)
    source = "given" if inputs.mix is not None else "measured in the store"
    lines = [
        f"volume: {inputs.hubs_per_year} hubs a year over {inputs.days:g} days of "
        f"{inputs.hours_per_day:g} working hours",
        f"times: medians (and p90) of {measured} hubs with an outcome in the store",
        f"operator handling: {inputs.handling_s:g} s per hub (pull one, insert the next), "
        "during which the slot is busy",
        f"target utilisation: {inputs.utilisation:.0%} of the working hours slots are busy "
        "flashing",
        f"rigs of {slots_per_rig} slots (the config's largest rig)",
        "Device Model mix ("
        + source
        + "): "
        + ", ".join(f"{model} {share:.1%}" for model, share in sorted(mix.items())),
        "retries, already-current and failed hubs in the shares measured per Device Model",
    ]
    if inputs.what_if is not None:
        w = inputs.what_if
        lines.append(
            f"what-if: upload at {w.baud} baud, {w.framing} framing, {w.frame_bytes}-byte SMP "
            "requests, at the physical bound (10 bits per byte) in place of the measured upload"
        )
    return lines


def parse_mix(text: str, source: str) -> dict[DeviceModel, float]:
    """A model mix CSV (`device_model,share`, shares summing to 1); PlanError names the line."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["device_model", "share"]:
        raise PlanError(f"{source}: line 1: the header must be device_model,share")
    mix: dict[DeviceModel, float] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise PlanError(f"{source}: line {line}: expected 2 fields, found {len(row)}")
        try:
            model = DeviceModel.parse(row[0].strip())
        except ValueError as exc:
            raise PlanError(f"{source}: line {line}: device_model: {exc}") from None
        try:
            share = float(row[1])
        except ValueError:
            raise PlanError(f"{source}: line {line}: share {row[1]!r} is not a number") from None
        if not 0 < share <= 1 or not math.isfinite(share):
            raise PlanError(f"{source}: line {line}: share {row[1]!r} is not in (0, 1]")
        if model in mix:
            raise PlanError(f"{source}: line {line}: Device Model {model} repeats")
        mix[model] = share
    if not mix:
        raise PlanError(f"{source}: no Device Model listed")
    total = sum(mix.values())
    if abs(total - 1) > SHARE_TOLERANCE:
        raise PlanError(f"{source}: the shares sum to {total:g}, not 1")
    return mix


def parse_what_if(texts: Sequence[str]) -> BaudWhatIf | None:
    """`--what-if KEY=VALUE` settings (baud, framing, frame); PlanError names a bad one."""
    if not texts:
        return None
    values: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or key not in {"baud", "framing", "frame"}:
            raise PlanError(f"--what-if {text!r}: write baud=N, framing=raw|console or frame=BYTES")
        values[key] = value
    if "baud" not in values:
        raise PlanError("--what-if: give baud=N (the link speed to plan with)")
    try:
        baud = int(values["baud"])
        frame = int(values.get("frame", DEFAULT_FRAME_BYTES))
    except ValueError:
        raise PlanError("--what-if: baud and frame are whole numbers") from None
    framing = values.get("framing", "raw")
    if framing not in {"raw", "console"} or baud <= 0 or frame < 64:
        raise PlanError("--what-if: baud > 0, framing raw or console, frame >= 64 bytes")
    return BaudWhatIf(baud=baud, framing=framing, frame_bytes=frame)
