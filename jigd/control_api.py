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
    StrictStr,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema

from jigd.events import BatchStatus, GuidField
from jigd.model import Outcome, SlotState, Stage

__all__ = [
    "BATCH",
    "BATCHES",
    "CLOSE_BATCH",
    "ENDPOINTS",
    "IMPORT_BATCH",
    "REJECTED",
    "RELOAD_CATALOG",
    "REPORT",
    "STATUS",
    "ApiError",
    "ApiModel",
    "BatchImportRequest",
    "BatchImported",
    "BatchList",
    "BatchView",
    "CatalogReloaded",
    "Endpoint",
    "ErrorResponse",
    "LoopLag",
    "OpenBatchView",
    "RejectedHubView",
    "RejectedList",
    "ReportFiles",
    "RigView",
    "SlotView",
    "StatusResponse",
]

IMPORT_FIELDS: Final = ("manifest", "source", "booking", "party")


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


class RigView(ApiModel):
    """A rig: whether its controller answers, and its slots."""

    rig: int
    up: bool
    slots: list[SlotView]


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


class OpenBatchView(BatchView):
    """An open batch in the station's status: with its ETA and busy slots."""

    eta_s: float | None = Field(description="seconds until every GUID has an outcome")
    busy_slots: int


class LoopLag(ApiModel):
    """Event-loop lag over the recent window, in milliseconds."""

    p50: float
    p99: float
    max: float


class StatusResponse(ApiModel):
    """The station: rigs and slots, open batches with progress and ETA, event-loop lag."""

    station: str
    uptime_s: float
    hubs_per_hour: float | None
    loop_lag_ms: LoopLag
    outbox_depth: int = Field(description="MQTT messages committed and not yet acknowledged")
    rigs: list[RigView]
    batches: list[OpenBatchView]


class BatchList(ApiModel):
    """Every batch."""

    batches: list[BatchView]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("empty")
    return value


# Not empty and not only white space (the pattern says so in the OpenAPI schema).
NonBlank = Annotated[StrictStr, Field(pattern=r"\S"), AfterValidator(_not_blank)]


class BatchImportRequest(ApiModel):
    """A manifest to import as a new batch."""

    manifest: NonBlank = Field(description="the manifest CSV's text (docs/manifest.md)")
    source: NonBlank = Field(description="where it came from (its file name), for messages")
    booking: NonBlank = Field(description="the booking (work order) reference")
    party: NonBlank = Field(description="the SEC Party that sent the hubs")

    @classmethod
    def parse(cls, body: str) -> BatchImportRequest:
        """Validate a request body; ApiError(400) names every missing or empty field."""
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body is not a JSON object")
        try:
            return cls.model_validate({k: data.get(k) for k in IMPORT_FIELDS})
        except ValidationError as exc:
            errors = exc.errors()
            undecodable = {e["loc"][0] for e in errors if e["type"] == "string_unicode"}
            text = [k for k in IMPORT_FIELDS if k in undecodable]
            if text:  # lone surrogates: what a client's undecodable bytes become
                raise ApiError(400, f"not UTF-8 text: {', '.join(text)}") from None
            bad = {e["loc"][0] for e in errors}
            missing = [k for k in IMPORT_FIELDS if k in bad]
            raise ApiError(400, f"missing or empty: {', '.join(missing)}") from None


class BatchImported(ApiModel):
    """The new batch."""

    batch: str = Field(examples=["B000001"])
    guids: int = Field(description="GUIDs in its manifest")


class ReportFiles(ApiModel):
    """A batch's four report files by name (docs/reports.md)."""

    files: dict[str, str]


class RejectedHubView(ApiModel):
    """A hub seen in a slot that no open batch lists."""

    guid: GuidField
    rig: int
    slot: int
    reason: str
    ts: IsoDateTime


class RejectedList(ApiModel):
    """Hubs rejected by this station."""

    rejected: list[RejectedHubView]


class CatalogReloaded(ApiModel):
    """The firmware catalog, read again."""

    entries: int = Field(description="entries in the catalog")


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
ENDPOINTS: Final[tuple[Endpoint[Any], ...]] = (
    STATUS,
    BATCHES,
    IMPORT_BATCH,
    BATCH,
    CLOSE_BATCH,
    REPORT,
    REJECTED,
    RELOAD_CATALOG,
)
