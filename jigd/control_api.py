"""The control API's contract: every endpoint, its request and response models, its errors.

One source for the daemon (jigd.control validates requests and serialises responses with these
models), for `jigctl`'s `ControlClient` (which parses responses with them) and for the OpenAPI
document (`python -m jigd.openapi` writes docs/openapi.yaml from them). The wire format is what
`json.dumps` makes of `model_dump(mode="json")`: fields in the order declared here
(docs/architecture.md, "Control API").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from drivers.untrusted import FIELD_LIMIT
from jigd.events import BatchStatus, DeviceModelField, FirmwareVersionField, GuidField
from jigd.model import Outcome, SlotState, Stage
from jigd.store.values import GuidStatus

__all__ = [
    "BATCH",
    "BATCHES",
    "BATCH_GUIDS",
    "CLOSE_BATCH",
    "DISABLE_SLOT",
    "ENABLE_SLOT",
    "ENDPOINTS",
    "IMPORT_BATCH",
    "REJECTED",
    "RELOAD_CATALOG",
    "REPORT",
    "SELFTEST",
    "STAGE_TIMES",
    "STATUS",
    "ApiError",
    "ApiModel",
    "BatchGuids",
    "BatchImportRequest",
    "BatchImported",
    "BatchList",
    "BatchView",
    "CatalogReloaded",
    "CheckView",
    "Endpoint",
    "ErrorResponse",
    "GuidView",
    "LoopLag",
    "ModelTimes",
    "OpenBatchView",
    "RejectedEntryView",
    "RejectedHubView",
    "RejectedList",
    "ReportFiles",
    "RigHour",
    "RigView",
    "SelftestRequest",
    "SelftestView",
    "ServiceView",
    "SetAsideView",
    "SlotServiceRequest",
    "SlotView",
    "StageTime",
    "StageTimes",
    "StatusResponse",
    "WaitView",
    "parse_body",
]

IMPORT_FIELDS: Final = ("manifest", "source", "booking", "party", "again")

_B = TypeVar("_B", bound="ApiModel")


class ApiModel(BaseModel):
    """A request or response body."""

    model_config = ConfigDict(frozen=True)

    def to_json(self) -> dict[str, Any]:
        """What goes on the wire (as `json.dumps` writes it)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        return data


# Times as the store holds them (UTC), written with Python's isoformat: `...+00:00`.
IsoDateTime = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "examples": ["2025-06-02T09:30:00.123456+00:00"],
        }
    ),
]


def _no_default(schema: dict[str, Any]) -> None:
    """`problems` is left out when there are none: it has no default value on the wire."""
    del schema["default"]


class ErrorResponse(ApiModel):
    """Any refused request: 400 bad input, 404 an unknown batch, 409 a state conflict."""

    error: str = Field(description="what went wrong, for a person")
    problems: list[str] | SkipJsonSchema[None] = Field(
        default=None,
        description="one line per problem (a manifest's mistakes, by line); absent if none",
        json_schema_extra=_no_default,
    )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json", exclude_none=True)
        return data


class ApiError(Exception):
    """A request the daemon refuses: the HTTP status and the error body."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=message, problems=problems or None)


class WaitView(ApiModel):
    """A slot waiting with a time limit: `waiting for boot 12/30 s`."""

    what: str = Field(examples=["boot"])
    waited_s: float
    limit_s: float


class ServiceView(ApiModel):
    """A slot out of service (`jigctl slot disable`, or a failed self-test), or put back."""

    rig: int
    slot: int
    disabled: bool
    reason: str = Field(description="why, as given (a self-test's: `selftest: <part>: ...`)")
    by: str = Field(description="who changed it (`selftest` for a failed self-test)")
    at: IsoDateTime
    finishing: bool = Field(
        default=False,
        description="in the answer to a disable: a hub is being flashed in the slot; it is "
        "finished first, then the slot starts no other",
    )


class SlotView(ApiModel):
    """What a slot is doing."""

    rig: int
    slot: int
    state: SlotState
    guid: GuidField | None = Field(description="the hub in the slot, once identified")
    batch: str | None = Field(description="the batch the hub belongs to")
    stage: Stage | None
    progress: float = Field(description="percent of the upload, one decimal")
    attempts: int
    outcome: Outcome | None = Field(description="the hub's outcome, once it has one")
    detail: str
    seconds_in_state: float
    model: DeviceModelField | None = Field(
        default=None, description="the hub's Device Model, once identified"
    )
    elapsed_s: float | None = Field(
        default=None, description="seconds since the slot started on this hub"
    )
    expected_s: float | None = Field(
        default=None,
        description="seconds this hub is expected to take in the slot (from recent hubs of "
        "its Device Model); absent until known",
    )
    wait: WaitView | None = Field(
        default=None, description="what the slot is waiting for, with its time limit"
    )
    disabled: ServiceView | None = Field(
        default=None,
        description="set while the slot is out of service: it starts no hub (one it is "
        "flashing finishes first)",
    )
    suspect: str | None = Field(
        default=None,
        description="why the slot yield watch finds the slot failing hubs significantly more "
        "often than the rest of its rig (a `slot_suspect` alert); absent while it does not",
    )


class CheckView(ApiModel):
    """One check of a rig self-test."""

    slot: int | None = Field(description="the slot checked; absent for the controller")
    check: str = Field(
        description="`controller` (answers), `power` (the switch toggles and presence "
        "follows), `led` (each colour acknowledged), `port` (opens), `echo` (the hub answers)",
        examples=["power"],
    )
    passed: bool
    detail: str = Field(description="what failed, for a person; empty if it passed")


class SelftestView(ApiModel):
    """A rig's self-test: each check, when, and what it did to the slots."""

    rig: int
    ts: IsoDateTime
    failed: int = Field(description="checks that failed")
    checks: list[CheckView]
    skipped: list[int] = Field(
        default_factory=list, description="slots not tested: a hub was being flashed there"
    )
    disabled: list[int] = Field(
        default_factory=list, description="slots taken out of service because a check failed"
    )


class RigView(ApiModel):
    """A rig: whether its controller answers, and its slots."""

    rig: int
    up: bool
    slots: list[SlotView]
    selftest: SelftestView | None = Field(
        default=None, description="the rig's last self-test (its checks), if it had one"
    )


class SetAsideView(ApiModel):
    """A hub that was put in a slot before its batch was imported: re-insert it."""

    guid: GuidField
    rig: int
    slot: int
    seen_at: IsoDateTime = Field(description="when it was rejected")


class BatchView(ApiModel):
    """A batch with its counts."""

    batch: str = Field(examples=["B000001"])
    booking: str
    party: str
    source: str
    status: BatchStatus
    created_at: IsoDateTime
    closed_at: IsoDateTime | None
    expected: int = Field(description="GUIDs in the manifest")
    received: int = Field(description="GUIDs seen in a slot at least once")
    pending: int = Field(description="GUIDs without an outcome yet")
    counts: dict[Outcome, int] = Field(description="GUIDs per outcome, every outcome")
    set_aside: list[SetAsideView] = Field(
        default_factory=list,
        description="GUIDs of this batch seen in a slot before the batch was imported, "
        "rejected then (`not_in_batch`) and not re-inserted since: put them back",
    )


class OpenBatchView(BatchView):
    """An open batch in the station's status: with its ETA and busy slots."""

    eta_s: float | None = Field(description="seconds until every GUID has an outcome")
    busy_slots: int


class LoopLag(ApiModel):
    """Event-loop lag over the recent window, in milliseconds."""

    p50: float
    p99: float
    max: float


class RejectedEntryView(ApiModel):
    """A firmware catalog entry that is never flashed until the catalog is fixed and reloaded."""

    model: DeviceModelField
    firmware_version: FirmwareVersionField
    sha256: str = Field(description="of the image file")
    code: str = Field(
        description="`image_untrusted`: it failed verification when the catalog was read; "
        "`image_missing` or `image_rejected`: a flash failed because of its image"
    )
    reason: str = Field(description="what failed, for a person")


class SiteStationView(ApiModel):
    """Another station of the site (sharing this station's store), as its last heartbeat told."""

    station: str
    host: str
    pid: int
    seen_s: float = Field(description="seconds since it was last heard from")
    slots: list[SlotView] = Field(description="its slots, as at that heartbeat")


class StatusResponse(ApiModel):
    """The station: rigs and slots, open batches with progress and ETA, event-loop lag."""

    station: str
    uptime_s: float
    hubs_per_hour: float | None
    loop_lag_ms: LoopLag
    outbox_depth: int = Field(description="MQTT messages committed and not yet acknowledged")
    rigs: list[RigView]
    batches: list[OpenBatchView]
    catalog_rejected: list[RejectedEntryView] = Field(
        description="catalog entries never flashed until the catalog is fixed and reloaded"
    )
    site: list[SiteStationView] = Field(
        default_factory=list,
        description="the other stations sharing this station's store (docs/install.md, "
        '"A site of several stations"), by name',
    )


class BatchList(ApiModel):
    """Every batch."""

    batches: list[BatchView]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("empty")
    return value


def _utf8(value: str) -> str:
    """Lone surrogates (a client's undecodable bytes, sent as JSON escapes) are no text:
    refused here rather than failing where the text is encoded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("string_unicode", "not UTF-8 text") from None
    return value


def _one_line(value: str) -> str:
    if not value.isprintable():
        raise PydanticCustomError("not_printable", "control characters")
    return value


# UTF-8 text, possibly empty (the regex of a pattern refuses lone surrogates by itself).
Text = Annotated[StrictStr, AfterValidator(_utf8)]
# Not empty and not only white space (the pattern says so in the OpenAPI schema).
NonBlank = Annotated[StrictStr, Field(pattern=r"\S"), AfterValidator(_not_blank)]
# A name that ends up in reports and on terminals: printable (no control characters, line
# breaks or bidi overrides) and at most FIELD_LIMIT characters (drivers/untrusted.py).
Name = Annotated[NonBlank, Field(max_length=FIELD_LIMIT), AfterValidator(_one_line)]

# What the client is told about a field, by the pydantic error type, in this order.
_FIELD_PROBLEMS: Final = (
    ("missing or empty", ("missing", "string_pattern_mismatch", "value_error")),
    ("not a string", ("string_type",)),
    ("not UTF-8 text", ("string_unicode",)),  # lone surrogates: a client's undecodable bytes
    (f"longer than {FIELD_LIMIT} characters", ("string_too_long", "too_long")),
    ("control characters in", ("not_printable",)),
)


class BatchImportRequest(ApiModel):
    """A manifest to import as a new batch."""

    manifest: Text = Field(
        description="the manifest CSV's text (docs/manifest.md); an empty one is refused with "
        "the manifest's own problem (the file is empty)"
    )
    source: NonBlank = Field(description="where it came from (its file name), for messages")
    booking: Name = Field(
        description="the booking (work order) reference; printable text (no control "
        "characters or line breaks)"
    )
    party: Name = Field(
        description="the SEC Party that sent the hubs; printable text (no control characters "
        "or line breaks)"
    )
    again: StrictBool = Field(
        default=False,
        description="import it although a closed batch had the same booking (a work order "
        "flashed again on purpose); without it such an import is refused",
    )

    @classmethod
    def parse(cls, body: str) -> BatchImportRequest:
        """Validate a request body; ApiError(400) names every field that is wrong, and how."""
        try:
            data = json.loads(body)
        except RecursionError:
            raise ApiError(400, "the request body is not JSON: nested too deeply") from None
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body is not a JSON object")
        values = {k: data[k] for k in IMPORT_FIELDS if k in data}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ApiError(400, _field_problems(values, exc)) from None


def _field_problems(values: dict[str, Any], exc: ValidationError) -> str:
    """`missing or empty: source; not a string: manifest`: each field under its problem."""
    kinds: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0])
        value = values.get(field)
        if value is None:
            kinds.setdefault(field, "missing")
        elif not isinstance(value, str):
            kinds.setdefault(field, "string_type")
        else:
            kinds.setdefault(field, error["type"])
    parts = []
    for problem, types in _FIELD_PROBLEMS:
        fields = [k for k in IMPORT_FIELDS if kinds.get(k) in types]
        if fields:
            parts.append(f"{problem}: {', '.join(fields)}")
    known = {t for _, types in _FIELD_PROBLEMS for t in types}
    other = [k for k in IMPORT_FIELDS if k in kinds and kinds[k] not in known]
    if other:
        parts.append(f"invalid: {', '.join(other)}")
    return "; ".join(parts)


class SlotServiceRequest(ApiModel):
    """Take a slot out of service, or put it back."""

    rig: StrictInt = Field(ge=1)
    slot: StrictInt = Field(ge=1, le=8)
    reason: Name = Field(description="why; printable text, one line")
    by: Name = Field(description="who asks (jigctl sends the user's login name)")


class SelftestRequest(ApiModel):
    """Self-test a rig now."""

    rig: StrictInt = Field(ge=1)


def parse_body(model: type[_B], body: str) -> _B:
    """A request body as `model`; ApiError(400) naming each field that is wrong."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        raise ApiError(400, f"bad request: {'; '.join(problems)}") from None


class BatchImported(ApiModel):
    """The new batch."""

    batch: str = Field(examples=["B000001"])
    guids: int = Field(description="GUIDs in its manifest")


class GuidView(ApiModel):
    """One GUID of a batch: where it is, and its outcome once it has one."""

    guid: GuidField
    line: int = Field(description="its line in the manifest")
    status: GuidStatus = Field(
        description="`pending` not seen yet, `in_progress` in a slot, `interrupted` cut short "
        "(resumes when seen again), `final` has its outcome"
    )
    outcome: Outcome | None
    model: DeviceModelField | None = Field(
        description="the Device Model the hub identified as, else the one declared"
    )
    from_version: FirmwareVersionField | None = Field(description="firmware before")
    to_version: FirmwareVersionField | None = Field(description="firmware after")
    attempts: int
    rig: int | None
    slot: int | None
    finished: IsoDateTime | None
    failure_stage: Stage | None
    failure_code: str | None
    failure_detail: str | None


class BatchGuids(ApiModel):
    """Every GUID of a batch, sorted by GUID."""

    batch: str = Field(examples=["B000001"])
    guids: list[GuidView]


class ReportFiles(ApiModel):
    """A batch's four report files by name (docs/reports.md)."""

    files: dict[str, str]


class RejectedHubView(ApiModel):
    """A hub this station refused: no open batch lists it (`not_in_batch`), or another station
    of the site was flashing it (`busy_elsewhere`)."""

    guid: GuidField
    rig: int
    slot: int
    reason: str
    ts: IsoDateTime


class RejectedList(ApiModel):
    """Hubs rejected by this station."""

    rejected: list[RejectedHubView]


class JournalEntryView(ApiModel):
    """One journal event (docs/install.md, "Retention": what `jigctl export` writes a line of)."""

    id: int = Field(description="its place in the journal (ids grow as events are written)")
    ts: IsoDateTime
    kind: str = Field(examples=["result"])
    batch: str | None
    guid: GuidField | None
    rig: int | None
    slot: int | None
    data: dict[str, Any] = Field(description="the event's fields, by name")


class BatchJournal(ApiModel):
    """A batch's journal, oldest first: every action on its GUIDs, until retention purges it."""

    batch: str = Field(examples=["B000001"])
    events: list[JournalEntryView]


class BackupRequest(ApiModel):
    """Where the daemon writes an online backup of its store."""

    path: NonBlank = Field(
        description="an absolute path of a file that does not exist yet, in a directory the "
        "daemon's user may write"
    )

    @classmethod
    def parse(cls, body: str) -> BackupRequest:
        """Validate a request body; ApiError(400) says what it should be."""
        try:
            return cls.model_validate_json(body)
        except ValidationError:
            raise ApiError(400, 'the request body is not {"path": "/absolute/new/file"}') from None


class BackupDone(ApiModel):
    """A finished backup."""

    path: str
    size: int = Field(description="bytes")
    blocked_s: float = Field(description="seconds the store's other work waited for the copy")


class CatalogReloaded(ApiModel):
    """The firmware catalog, read again."""

    entries: int = Field(description="entries in the catalog")
    rejected: list[RejectedEntryView] = Field(
        description="those that failed verification: never flashed"
    )


class StageTime(ApiModel):
    """The durations of one stage (a span of the flash procedure) over a Device Model's hubs."""

    count: int = Field(description="hubs measured")
    median_s: float
    p90_s: float = Field(description="90th percentile")


class ModelTimes(ApiModel):
    """A Device Model's measured times and yield, from every hub of it with an outcome of its
    own (reflashed, already_current or failed) in the store."""

    model: DeviceModelField
    hubs: int = Field(description="hubs with an outcome of their own")
    reflashed: int
    already_current: int
    failed: int
    first_pass: int = Field(description="hubs reflashed or already current at their first attempt")
    retries: int = Field(description="attempts after the first, over all its hubs")
    retry_s: float = Field(
        description="mean seconds per hub spent before its last attempt (earlier attempts and "
        "the power cycles between them)"
    )
    upload: StageTime | None = Field(
        description="reflashed hubs' last attempt, from its start to the end of the upload "
        "(authorize, select, check_current, unlock, upload)"
    )
    activate: StageTime | None = Field(
        description="reflashed hubs' last attempt, from the end of the upload to the result "
        "(mark_test, reset, await_boot, verify, confirm, lock, record)"
    )
    check: StageTime | None = Field(
        description="already-current hubs' last attempt, from its start to the result"
    )
    failing: StageTime | None = Field(
        description="failed hubs, from their first attempt's start to the result"
    )
    hub: StageTime = Field(description="every hub, from its first attempt's start to the result")
    image_bytes: int | None = Field(
        description="size of the Device Model's latest selectable image in the catalog; "
        "absent if there is none"
    )


class RigHour(ApiModel):
    """How many hubs a rig finished (with an outcome of their own) in one clock hour."""

    rig: int
    hour: IsoDateTime = Field(description="the start of the hour (UTC)")
    hubs: int


class StageTimes(ApiModel):
    """The measured times the capacity plan (`jigctl plan`) is made from.

    Per Device Model, the times of its hubs; the station's rigs and slots; hubs finished per
    rig and clock hour."""

    models: list[ModelTimes]
    rigs: int = Field(description="rigs in the config")
    slots_per_rig: int = Field(description="most slots a rig of the config has")
    hourly: list[RigHour]


_R = TypeVar("_R", bound=ApiModel)


@dataclass(frozen=True)
class Endpoint(Generic[_R]):
    """One operation: method, path (with `{batch}` where it names one), models and statuses."""

    operation_id: str
    method: str
    path: str
    summary: str
    response: type[_R]
    request: type[ApiModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()

    def url(self, batch: str | None = None) -> str:
        return self.path if batch is None else self.path.replace("{batch}", batch)


STATUS: Final = Endpoint("getStatus", "GET", "/v1/status", "The station", StatusResponse)
BATCHES: Final = Endpoint("listBatches", "GET", "/v1/batches", "Every batch", BatchList)
IMPORT_BATCH: Final = Endpoint(
    "importBatch",
    "POST",
    "/v1/batches",
    "Import a manifest as a new batch",
    BatchImported,
    request=BatchImportRequest,
    status=201,
    errors=(400,),
)
BATCH: Final = Endpoint(
    "getBatch", "GET", "/v1/batches/{batch}", "One batch", BatchView, errors=(404,)
)
CLOSE_BATCH: Final = Endpoint(
    "closeBatch",
    "POST",
    "/v1/batches/{batch}/close",
    "Close a batch: GUIDs never seen become not_received",
    BatchView,
    errors=(404, 409),
)
BATCH_GUIDS: Final = Endpoint(
    "getBatchGuids",
    "GET",
    "/v1/batches/{batch}/guids",
    "A batch's GUIDs with their outcomes",
    BatchGuids,
    errors=(404,),
)
REPORT: Final = Endpoint(
    "getReport",
    "GET",
    "/v1/batches/{batch}/report",
    "A batch's reports",
    ReportFiles,
    errors=(404,),
)
REJECTED: Final = Endpoint("listRejected", "GET", "/v1/rejected", "Rejected hubs", RejectedList)
RELOAD_CATALOG: Final = Endpoint(
    "reloadCatalog",
    "POST",
    "/v1/catalog/reload",
    "Read the firmware catalog again",
    CatalogReloaded,
    errors=(400,),
)
STAGE_TIMES: Final = Endpoint(
    "getStageTimes",
    "GET",
    "/v1/stage-times",
    "Measured stage times per Device Model, for the capacity plan",
    StageTimes,
)
JOURNAL: Final = Endpoint(
    "getBatchJournal",
    "GET",
    "/v1/batches/{batch}/journal",
    "A batch's journal events, for export before retention purges them",
    BatchJournal,
    errors=(404,),
)
BACKUP: Final = Endpoint(
    "backupStore",
    "POST",
    "/v1/backup",
    "Write a consistent online backup of the store to a new file",
    BackupDone,
    request=BackupRequest,
    status=201,
    errors=(400,),
)
DISABLE_SLOT: Final = Endpoint(
    "disableSlot",
    "POST",
    "/v1/slots/disable",
    "Take a slot out of service: it starts no hub until enabled",
    ServiceView,
    request=SlotServiceRequest,
    errors=(400, 404),
)
ENABLE_SLOT: Final = Endpoint(
    "enableSlot",
    "POST",
    "/v1/slots/enable",
    "Put a slot back in service",
    ServiceView,
    request=SlotServiceRequest,
    errors=(400, 404),
)
SELFTEST: Final = Endpoint(
    "selftestRig",
    "POST",
    "/v1/selftest",
    "Self-test a rig now; slots that fail are taken out of service",
    SelftestView,
    request=SelftestRequest,
    errors=(400, 404, 409),
)
ENDPOINTS: Final[tuple[Endpoint[Any], ...]] = (
    STATUS,
    BATCHES,
    IMPORT_BATCH,
    BATCH,
    CLOSE_BATCH,
    BATCH_GUIDS,
    REPORT,
    REJECTED,
    RELOAD_CATALOG,
    STAGE_TIMES,
    JOURNAL,
    BACKUP,
    DISABLE_SLOT,
    ENABLE_SLOT,
    SELFTEST,
)
