"""Fleet operations: routers imported from a CSV file (checked row by row, committed all or nothing), the
progress of an import, and one ZIP of every active router's files.

The import is one service for the pages and the JSON API:

    result = import_routers(actor, tenant_id, csv_text)   # adds nothing unless every row passes
    db.session.commit()                                    # the caller commits (portal.actions.commit) ...
    wake_hubs(result.hub_ids)                              # ... then wakes each hub's batch once

A file is: a header row naming its columns (`name`, and optionally `note`, `api_address`, `api_username`;
any case, spaces or dashes for underscores), then one router per row, comma- or semicolon-separated, UTF-8.
A password column refuses the whole file: passwords never travel in a CSV. Rows are checked with the rules of
`portal.wireguard.service.add_router` (name, note, the name free in the tenant), and against each other.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select

from portal import live
from portal.audit.service import Actor, record
from portal.crypto import generate_keypair, generate_preshared_key
from portal.downloads import WIREGUARD_KINDS, File, wireguard_file
from portal.errors import DomainError
from portal.extensions import db
from portal.ipam import service as ipam
from portal.ipam.models import FreeAddress, TenantSubnet
from portal.ipam.pool import FIRST_ROUTER_HOST_INDEX, host_address, last_host_index
from portal.types import utcnow
from portal.wireguard import jobs, service
from portal.wireguard.fleet_models import RouterImport, RouterImportItem
from portal.wireguard.models import KIND, Router, Status, VpnConfiguration

COLUMNS = ("name", "note", "api_address", "api_username")
MAX_ROWS = 5000
MAX_CHARACTERS = 1_000_000
ADDRESS_MAX = 253
USERNAME_MAX = 64
SECRET_COLUMN_WORDS = ("pass", "secret", "token", "key")
PASSWORD_COLUMN = ("The file has a “{column}” column. Passwords and other secrets never go in a CSV file: remove "
                   "that column and import again; API passwords are set in the portal, router by router.")
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FAILED_SHOWN = 50


# Checking a file --------------------------------------------------------------------------------

@dataclass
class Row:
    """One router of the file, as read, with what is wrong with it (nothing: it can be imported)."""

    line: int  # the line it ends on (the header is line 1, as a spreadsheet numbers rows)
    name: str
    note: str = ""
    api_address: str = ""
    api_username: str = ""
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "name": self.name, "note": self.note, "api_address": self.api_address or None,
                "api_username": self.api_username or None, "errors": list(self.errors)}


@dataclass
class Checked:
    """A file's rows, each with its errors, and the errors of the file as a whole. A file that cannot be read,
    or whose header is wrong (a password column among others), has no rows: it is not shown back."""

    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.rows) and not any(row.errors for row in self.rows)

    @property
    def rows_with_errors(self) -> int:
        return sum(1 for row in self.rows if row.errors)


def check(tenant_id: int, csv_text: str) -> Checked:
    """Read and check a file without changing anything: the preview."""
    checked = _read(csv_text)
    if checked.problems:
        return checked
    if not checked.rows:
        checked.problems.append("The file has a header but no routers.")
        return checked
    for row in checked.rows:
        _check_row(row)
    _check_duplicates(checked.rows)
    _check_taken(tenant_id, checked.rows)
    free = free_addresses(tenant_id)
    if len(checked.rows) > free:
        checked.problems.append(f"Your subnet has {free} free addresses, and the file has {len(checked.rows)} "
                                "routers: revoke routers you no longer use, or import fewer.")
    return checked


def _read(csv_text: str) -> Checked:
    checked = Checked()
    if len(csv_text) > MAX_CHARACTERS:
        checked.problems.append(f"The file is larger than {MAX_CHARACTERS // 1_000_000} MB; split it.")
        return checked
    csv_text = csv_text.removeprefix("\ufeff")  # the byte order mark spreadsheets write
    first = next((line for line in csv_text.splitlines() if line.strip()), "")
    if not first:
        checked.problems.append("The file is empty: it needs a header row (name, note, api_address, api_username) "
                                "and one router per row.")
        return checked
    delimiter = ";" if first.count(";") > first.count(",") else ","  # spreadsheets in many locales write ";"
    reader = csv.reader(io.StringIO(csv_text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:  # only separators
            checked.problems.append("The file has no header row (name, note, api_address, api_username).")
            return checked
        columns = _columns(header, checked.problems)
        if checked.problems:
            return checked
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(checked.rows) == MAX_ROWS:
                checked.rows.clear()
                checked.problems.append(f"The file has more than {MAX_ROWS} routers; split it.")
                return checked
            checked.rows.append(_row(reader.line_num, cells, columns))
    except csv.Error as error:
        checked.rows.clear()
        checked.problems.append(f"Line {reader.line_num} cannot be read as CSV: {error}.")
    return checked


def _columns(header: list[str], problems: list[str]) -> list[str]:
    """The header's column names, normalised; a problem for a password, unknown, repeated or missing column."""
    columns = [re.sub(r"[\s-]+", "_", cell.strip().lower()) for cell in header]
    secret = next((raw for raw, column in zip(header, columns, strict=True)
                   if any(word in column for word in SECRET_COLUMN_WORDS)), None)
    if secret is not None:
        problems.append(PASSWORD_COLUMN.format(column=secret.strip()))
        return columns
    unknown = [raw.strip() or "(empty)" for raw, column in zip(header, columns, strict=True) if column not in COLUMNS]
    if unknown:
        problems.append(f"Unknown column(s): {', '.join(unknown)}. The columns are {', '.join(COLUMNS)} "
                        "(only name is required).")
    repeated = sorted({column for column in columns if columns.count(column) > 1 and column in COLUMNS})
    if repeated:
        problems.append(f"Column(s) named twice: {', '.join(repeated)}.")
    if "name" not in columns:
        problems.append("The header row must name a “name” column (and optionally note, api_address, "
                        "api_username).")
    return columns


def _row(line: int, cells: list[str], columns: list[str]) -> Row:
    values = dict(zip(columns, (cell.strip() for cell in cells), strict=False))
    row = Row(line=line, name=values.get("name", ""), note=values.get("note", ""),
              api_address=values.get("api_address", ""), api_username=values.get("api_username", ""))
    if len(cells) > len(columns):
        row.errors.append(f"{len(cells)} values, but the header has {len(columns)} columns.")
    return row


def _check_row(row: Row) -> None:
    try:
        row.name = service.validate_router_name(row.name)
    except DomainError as error:
        row.errors.append(str(error))
    try:
        row.note = service.validate_note(row.note)
    except DomainError as error:
        row.errors.append(str(error))
    if row.api_address and (problem := address_error(row.api_address)):
        row.errors.append(problem)
    if row.api_username:
        if len(row.api_username) > USERNAME_MAX or CONTROL.search(row.api_username):
            row.errors.append(f"API user names are at most {USERNAME_MAX} characters, without control characters.")
        if not row.api_address:
            row.errors.append("An API user needs an API address.")


def address_error(value: str) -> str | None:
    """Why `value` is not an IP address or host name, or None."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    if (len(value) <= ADDRESS_MAX and all(HOST_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit()):
        return None
    return f"The API address “{value[:80]}” is not an IP address or host name."


def _check_duplicates(rows: list[Row]) -> None:
    lines: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.name:
            lines[row.name.lower()].append(row.line)
    for row in rows:
        others = [line for line in lines.get(row.name.lower(), ()) if line != row.line]
        if others:
            row.errors.append(f"The same name is on line {', '.join(map(str, others))} of the file.")


def _check_taken(tenant_id: int, rows: list[Row]) -> None:
    """Names the tenant has already, compared by the database's `lower` (as its unique index compares them: on
    SQLite that folds ASCII letters only)."""
    wanted = sorted({row.name for row in rows if row.name})
    taken: set[str] = set()
    for start in range(0, len(wanted), 500):
        taken.update(name.lower() for name in db.session.scalars(select(Router.name).where(
            Router.tenant_id == tenant_id,
            func.lower(Router.name).in_([func.lower(name) for name in wanted[start:start + 500]]))))
    for row in rows:
        if row.name.lower() in taken:
            row.errors.append(f"You already have a router named {row.name!r}.")


def free_addresses(tenant_id: int) -> int:
    """Router addresses the tenant's subnet has left (all of a subnet not allocated yet)."""
    subnet = ipam.subnet_of(tenant_id)
    if subnet is None:
        return last_host_index(ipam.configured_pool().subnet(0)) - FIRST_ROUTER_HOST_INDEX + 1
    returned = db.session.scalar(select(func.count()).where(FreeAddress.subnet_id == subnet.id))
    return last_host_index(subnet.ip_network) - subnet.next_host + 1 + returned


# Importing --------------------------------------------------------------------------------------

@dataclass
class ImportResult:
    """What `import_routers` did: the checked file, and when every row passed, what it created."""

    checked: Checked
    import_id: int | None = None
    router_ids: list[int] = field(default_factory=list)
    hub_ids: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.import_id is not None

    def as_dict(self) -> dict[str, Any]:
        """For the JSON API: errors of the file and of each row, or the import and its routers."""
        return {"imported": self.ok, "import_id": self.import_id, "router_ids": self.router_ids,
                "errors": list(self.checked.problems), "rows": [row.as_dict() for row in self.checked.rows]}


def import_routers(actor: Actor, tenant_id: int, csv_text: str) -> ImportResult:
    """Check the file; if every row passes, add its routers, each with its first configuration (pending), and
    the import that lists them, in the caller's transaction; if any fails, add nothing.

    The caller commits and then calls `wake_hubs(result.hub_ids)`. A DomainError (the pool or the subnet ran
    out since the check, no hub configured) leaves added rows in the session: the caller rolls back."""
    checked = check(tenant_id, csv_text)
    if not checked.ok:
        return ImportResult(checked)
    rows = checked.rows
    keys = [(generate_keypair(), generate_preshared_key()) for _ in rows]  # the slow part before the subnet lock
    subnet = ipam.locked_subnet(tenant_id) or ipam.ensure_subnet(tenant_id, service.default_hub().id)
    host_indexes = allocate_hosts(subnet, len(rows))
    batch = RouterImport(tenant_id=tenant_id, created_by=actor.user_id, created_by_label=actor.label[:254],
                         row_count=len(rows))
    db.session.add(batch)
    db.session.flush()
    # Bulk INSERTs that return the new rows, in order: a unit-of-work flush of as many objects costs twice as much.
    routers = list(db.session.scalars(insert(Router).returning(Router, sort_by_parameter_order=True), [
        {"tenant_id": tenant_id, "name": row.name, "note": row.note, "api_address": row.api_address or None,
         "api_username": row.api_username or None} for row in rows]))
    network = subnet.ip_network
    configurations = list(db.session.scalars(
        insert(VpnConfiguration).returning(VpnConfiguration, sort_by_parameter_order=True), [
            {"tenant_id": tenant_id, "router_id": router.id, "hub_id": subnet.hub_id, "subnet_id": subnet.id,
             "host_index": index, "address": str(host_address(network, index)), "public_key": pair.public,
             "private_key": pair.private, "preshared_key": preshared_key, "status": Status.PENDING}
            for router, index, (pair, preshared_key) in zip(routers, host_indexes, keys, strict=True)]))
    db.session.execute(insert(RouterImportItem), [{"import_id": batch.id, "router_id": r.id} for r in routers])
    _audit(actor, batch, routers, configurations)
    # One hint stands for the batch: pages fetch whole panels again on it, and no page is open on a router that
    # did not exist a moment ago (the workers' hints, per configuration, follow as the batches run).
    last = configurations[-1]
    live.status_changed(KIND, last.id, tenant_id, Status.PENDING, router_id=last.router_id)
    live.usage_changed(tenant_id)
    return ImportResult(checked, batch.id, [router.id for router in routers], [subnet.hub_id])


def allocate_hosts(subnet: TenantSubnet, count: int) -> list[int]:
    """`ipam.allocate_host` for `count` routers at once, in a subnet the caller has locked: the lowest
    returned addresses first, then the counter's. SubnetExhausted if there are not enough."""
    lowest = (select(FreeAddress.host_index).where(FreeAddress.subnet_id == subnet.id)
              .order_by(FreeAddress.host_index).limit(count))
    counted = count - db.session.scalar(select(func.count()).select_from(lowest.subquery()))
    if subnet.next_host + counted - 1 > last_host_index(subnet.ip_network):
        raise ipam.SubnetExhausted(f"The subnet {subnet.network} has fewer than {count} free addresses; revoke "
                                   "routers you no longer use, or import fewer.")
    returned = sorted(db.session.scalars(
        delete(FreeAddress).where(FreeAddress.subnet_id == subnet.id, FreeAddress.host_index.in_(lowest))
        .returning(FreeAddress.host_index).execution_options(synchronize_session=False)))
    first = subnet.next_host
    subnet.next_host = first + count - len(returned)
    return returned + list(range(first, subnet.next_host))


def _audit(actor: Actor, batch: RouterImport, routers: list[Router],
           configurations: list[VpnConfiguration]) -> None:
    """The events `add_router` writes for each router (marked with the import), and one for the import."""
    tenant_id = batch.tenant_id
    for router, configuration in zip(routers, configurations, strict=True):
        record("router.created", actor, tenant_id=tenant_id, target=router,
               details={"name": router.name, "import_id": batch.id})
        record("configuration.created", actor, tenant_id=tenant_id, target=configuration,
               details={"router_id": router.id, "address": configuration.address,
                        "public_key": configuration.public_key, "hub_id": configuration.hub_id})
    record("routers.imported", actor, tenant_id=tenant_id, target=batch, details={"routers": len(routers)})


def wake_hubs(hub_ids: list[int]) -> bool:
    """After the commit: one wake-up per hub, as adding one router does; False if the queue did not answer
    (the sweep finds the work anyway)."""
    return all([jobs.sync_hub.wake(hub_id) for hub_id in hub_ids])


# Progress ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FailedRouter:
    router_id: int
    name: str
    error: str | None


@dataclass(frozen=True)
class Progress:
    """Where an import's routers are: their live configurations per status (`revoked`: none is live)."""

    total: int
    by_status: dict[str, int]
    retrying: int  # pending after a transient failure (hub unreachable), waiting for their retry
    failed: list[FailedRouter]

    def count(self, *statuses: str) -> int:
        return sum(self.by_status.get(status, 0) for status in statuses)

    @property
    def waiting(self) -> int:
        return self.count(Status.PENDING, Status.PROVISIONING)

    @property
    def active(self) -> int:
        return self.count(Status.ACTIVE, Status.ROTATING)

    @property
    def finished(self) -> bool:
        return self.waiting == 0


def progress(batch: RouterImport) -> Progress:
    routers = select(RouterImportItem.router_id).where(RouterImportItem.import_id == batch.id)
    live_rows = (VpnConfiguration.router_id.in_(routers), VpnConfiguration.status != Status.REVOKED)
    by_status: Counter[str] = Counter(dict(db.session.execute(
        select(VpnConfiguration.status, func.count()).where(*live_rows).group_by(VpnConfiguration.status)).all()))
    retrying = db.session.scalar(select(func.count()).select_from(VpnConfiguration).where(
        *live_rows, VpnConfiguration.status == Status.PENDING, VpnConfiguration.retry_at.is_not(None)))
    if (revoked := batch.row_count - by_status.total()) > 0:
        by_status[Status.REVOKED] = revoked
    failed = [FailedRouter(*row) for row in db.session.execute(
        select(Router.id, Router.name, VpnConfiguration.last_error)
        .join(VpnConfiguration, VpnConfiguration.router_id == Router.id)
        .where(*live_rows, VpnConfiguration.status == Status.FAILED).order_by(Router.name).limit(FAILED_SHOWN))]
    return Progress(total=batch.row_count, by_status=dict(by_status), retrying=retrying, failed=failed)


def recent_imports(tenant_id: int, limit: int = 10) -> list[RouterImport]:
    return list(db.session.scalars(select(RouterImport).where(RouterImport.tenant_id == tenant_id)
                                   .order_by(RouterImport.id.desc()).limit(limit)))


# Downloading every active router ----------------------------------------------------------------

class NothingToDownload(DomainError):
    """The tenant has no active router."""


def active_configurations_zip(actor: Actor, tenant_id: int, now: datetime | None = None, *,
                              router_ids: Collection[int] | None = None) -> File:
    """A ZIP of every active router's RouterOS script and wg-quick file (only those of `router_ids` when given),
    built in memory. Each file goes through `portal.downloads.wireguard_file`, so each is audited as a download of
    its own (in the caller's transaction: commit before sending it)."""
    query = select(VpnConfiguration).where(VpnConfiguration.tenant_id == tenant_id,
                                           VpnConfiguration.status == Status.ACTIVE)
    if router_ids is not None:
        query = query.where(VpnConfiguration.router_id.in_(list(router_ids)))
    configurations = db.session.scalars(
        query.options(*service.PEER_PARTS)
        .order_by(VpnConfiguration.id)).all()
    if not configurations:
        raise NothingToDownload("No router is active yet: there is nothing to download." if router_ids is None
                                else "None of the selected routers is active: there is nothing to download.")
    moment = (now or utcnow()).replace(microsecond=0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for configuration in configurations:
            for kind in WIREGUARD_KINDS:
                file = wireguard_file(actor, configuration, kind)
                entry = zipfile.ZipInfo(file.filename, date_time=moment.timetuple()[:6])
                entry.compress_type = zipfile.ZIP_DEFLATED
                entry.external_attr = 0o600 << 16  # private keys: readable by their owner only once unpacked
                archive.writestr(entry, file.body)
    return File(buffer.getvalue(), "application/zip",  # bytes, which File.response sends as they are
                f"wireguard-routers-{moment:%Y%m%d-%H%M%S}.zip")
