"""What the API takes and gives, as pydantic models: the OpenAPI document's schemas are generated from these, and
requests are validated by them. Request models refuse unknown fields; response models are built from rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portal.openvpn.models import CLIENT_NAME
from portal.openvpn.models import Status as ClientStatus
from portal.wireguard.fleet import COLUMNS as IMPORT_COLUMNS
from portal.wireguard.fleet import MAX_CHARACTERS as IMPORT_MAX_CHARACTERS
from portal.wireguard.fleet import MAX_ROWS as IMPORT_MAX_ROWS
from portal.wireguard.models import Status as ConfigurationStatus
from portal.wireguard.service import NOTE_MAX, ROUTER_NAME

ID_MAX = 2**31 - 1  # ids are 32-bit integers on PostgreSQL; a larger id names nothing
Id = Annotated[int, Field(ge=1, le=ID_MAX)]
PER_PAGE_MAX = 100


def _anchored(pattern: str) -> str:
    """A service's `fullmatch` rule as a JSON Schema pattern (which matches anywhere unless anchored)."""
    return f"^(?:{pattern})$"


# Free text (a note, a search): no control characters but tab and line breaks. PostgreSQL refuses NUL in text,
# and nothing a person types needs the others.
PLAIN_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

ConfigurationState = Literal[tuple(status.value for status in ConfigurationStatus)]  # type: ignore[valid-type]
ClientState = Literal[tuple(status.value for status in ClientStatus)]  # type: ignore[valid-type]


# Requests ------------------------------------------------------------------------------------------------------

class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NewConfiguration(RequestBody):
    """A new configuration (new keys, new address) for a router whose last one is revoked."""

    router_id: Id


class NewRouter(RequestBody):
    name: Annotated[str, Field(pattern=_anchored(ROUTER_NAME.pattern), description="Unique in the tenant, "
                               "regardless of case.")]
    note: Annotated[str, Field(max_length=NOTE_MAX, pattern=PLAIN_TEXT)] = ""


class RouterChanges(RequestBody):
    """The fields to change; at least one."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"minProperties": 1})

    name: Annotated[str, Field(pattern=_anchored(ROUTER_NAME.pattern))] | None = None
    note: Annotated[str, Field(max_length=NOTE_MAX, pattern=PLAIN_TEXT)] | None = None

    @model_validator(mode="after")
    def something_changes(self) -> RouterChanges:
        if self.name is None and self.note is None:
            raise ValueError("give a name, a note or both")
        return self


class NewClient(RequestBody):
    name: Annotated[str, Field(pattern=_anchored(CLIENT_NAME.pattern), description="The client's name in this "
                               "tenant; `server` is reserved.")]


class RouterImportFile(RequestBody):
    """A CSV file of routers, as the text of a JSON string."""

    csv: Annotated[str, Field(max_length=IMPORT_MAX_CHARACTERS, pattern=PLAIN_TEXT, description=(
        f"The file: a header row naming its columns ({', '.join(IMPORT_COLUMNS)}; only name is required), then "
        f"one router per row (at most {IMPORT_MAX_ROWS}), comma- or semicolon-separated. A password (or other "
        "secret) column refuses the whole file."))]


class Query(BaseModel):
    """Query strings: values arrive as text and are converted; an unknown parameter is refused (a typo in a
    filter would otherwise list everything)."""

    model_config = ConfigDict(extra="forbid")

    page: Annotated[int, Field(ge=1, le=1_000_000, description="1 is the first page.")] = 1
    per_page: Annotated[int, Field(ge=1, le=PER_PAGE_MAX)] = 25


class ConfigurationQuery(Query):
    status: ConfigurationState | None = None
    router_id: Id | None = None


class RouterQuery(Query):
    q: Annotated[str, Field(max_length=64, pattern=PLAIN_TEXT, description="Part of the name, any case.")] = ""


class ClientQuery(Query):
    status: ClientState | None = None
    q: Annotated[str, Field(max_length=64, pattern=PLAIN_TEXT, description="Part of the name, any case.")] = ""


# Responses -----------------------------------------------------------------------------------------------------

class Hub(BaseModel):
    id: int
    name: str
    endpoint: str = Field(description="host:port the routers connect to")


class Downloads(BaseModel):
    mikrotik: str = Field(description="URL of the RouterOS script (.rsc)")
    linux: str = Field(description="URL of the wg-quick file (.conf)")


class Configuration(BaseModel):
    """One WireGuard peer of a router: its address, keys' public halves and provisioning state."""

    id: int
    url: str
    router_id: int
    router_name: str
    status: ConfigurationState
    address: str
    public_key: str
    next_public_key: str | None = Field(description="While rotating: the key that becomes current once the hub "
                                        "holds it.")
    hub: Hub
    last_error: str | None
    retry_at: datetime | None
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    revoked_at: datetime | None
    last_handshake_at: datetime | None
    rx_bytes: int
    tx_bytes: int
    downloads: Downloads | None = Field(description="Null once revoked (its keys are erased).")


class Router(BaseModel):
    id: int
    url: str
    name: str
    note: str
    created_at: datetime
    configuration: Configuration | None = Field(description="The live configuration, else the newest revoked "
                                                "one.")


class Server(BaseModel):
    id: int
    name: str
    remote: str = Field(description="host:port the client connects to")
    protocol: Literal["udp", "tcp"]


class Client(BaseModel):
    """An OpenVPN client: one certificate on one server."""

    id: int
    url: str
    name: str
    status: ClientState
    server: Server
    serial: str | None
    not_after: datetime | None
    last_error: str | None
    retry_at: datetime | None
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    revoked_at: datetime | None
    connected: bool
    last_seen_at: datetime | None
    download: str | None = Field(description="URL of the .ovpn profile once active.")


class Subnet(BaseModel):
    """The tenant's subnet; `network` is null until the first router takes an address."""

    network: str | None
    hub: Hub | None
    used: int = Field(description="Addresses in use, the hub's included.")
    free: int
    total: int
    percent: float


class Page(BaseModel):
    page: int
    per_page: int
    total: int
    next: str | None = Field(description="URL of the next page, also in the Link header; null on the last.")


class ConfigurationPage(Page):
    items: list[Configuration]


class RouterPage(Page):
    items: list[Router]


class ClientPage(Page):
    items: list[Client]


class ImportRow(BaseModel):
    """A row of an imported file, as read, with what is wrong with it."""

    line: int = Field(description="The line of the file it ends on (the header is line 1).")
    name: str
    note: str
    api_address: str | None
    api_username: str | None
    errors: list[str] = Field(description="Empty: the row can be imported.")


class RouterImportResult(BaseModel):
    """What an import did: with `imported`, the import and the routers it created (in the file's order), each
    with its first configuration `pending`; without, the errors and nothing created."""

    imported: bool
    import_id: int | None = Field(description="Null unless imported; `GET /api/routers/imports/{id}` is its "
                                  "progress.")
    router_ids: list[int]
    errors: list[str] = Field(description="What is wrong with the file as a whole (then `rows` may be empty).")
    rows: list[ImportRow]


class ImportFailure(BaseModel):
    router_id: int
    name: str
    error: str | None


class RouterImportProgress(BaseModel):
    """Where an import's routers are, by the status of their live configurations."""

    id: int
    url: str
    created_at: datetime
    created_by: str
    total: int = Field(description="Routers the import created.")
    by_status: dict[str, int] = Field(description="Routers per configuration status (`revoked`: none is live).")
    waiting: int = Field(description="`pending` or `provisioning`.")
    retrying: int = Field(description="Pending again after a transient failure (the hub did not answer).")
    active: int = Field(description="`active` or `rotating`.")
    finished: bool = Field(description="No router is waiting any more.")
    failed: list[ImportFailure] = Field(description="The failed routers by name (the first 50).")


class Health(BaseModel):
    status: Literal["ok"]


class ErrorDetail(BaseModel):
    field: str = Field(description="Where: `body.name`, `query.page`, ...; `body.csv` or `body.csv.line.3` for "
                       "an imported file and its rows.")
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable, for programs; see the list in the API description.")
    message: str = Field(description="For people; may change.")
    details: list[ErrorDetail] | None = Field(default=None, description="Which fields were wrong (validation "
                                              "errors, and the rows of an imported file).")


class Error(BaseModel):
    error: ErrorInfo


class RouterImportRefused(RouterImportResult):
    """A file with errors: nothing was imported. The result as for an import, with the error envelope."""

    error: ErrorInfo


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=False)
