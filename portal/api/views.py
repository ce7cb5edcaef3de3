"""The tenant JSON API at /api: WireGuard configurations (the original design's paths), routers, OpenVPN clients,
health, the OpenAPI document and its reference page.

Every change goes through the same service as the pages, audited with the token's name as the actor, and wakes
the same job after the commit. Another tenant's id is a 404, as on the pages.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Blueprint, Response, g, jsonify, render_template, request, url_for
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from portal.api import present, queries, reference
from portal.api.auth import Caller
from portal.api.errors import ApiError, response_for
from portal.api.models import Scope
from portal.api.replies import Reply
from portal.api.schemas import (
    Client,
    ClientPage,
    ClientQuery,
    Configuration,
    ConfigurationPage,
    ConfigurationQuery,
    Error,
    ErrorDetail,
    ErrorInfo,
    Health,
    ImportFailure,
    NewClient,
    NewConfiguration,
    NewRouter,
    Router,
    RouterChanges,
    RouterImportFile,
    RouterImportProgress,
    RouterImportRefused,
    RouterImportResult,
    RouterPage,
    RouterQuery,
    Subnet,
)
from portal.api.spec import Answer, operation, register_converters
from portal.downloads import File, openvpn_file, wireguard_file
from portal.extensions import csrf, db
from portal.ipam.service import subnet_of, usage
from portal.openvpn import jobs as openvpn_jobs
from portal.openvpn import service as openvpn
from portal.openvpn.models import VpnClient
from portal.tenancy.scope import get_owned_or_404
from portal.wireguard import fleet
from portal.wireguard import jobs as wireguard_jobs
from portal.wireguard import service as wireguard
from portal.wireguard.fleet_models import RouterImport
from portal.wireguard.models import Hub as HubRow
from portal.wireguard.models import Router as RouterRow
from portal.wireguard.models import VpnConfiguration

blueprint = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(blueprint)  # bearer tokens only, never cookies: a cross-site request carries no token
blueprint.record_once(register_converters)  # before the rules below are bound to the app's map

CONFIGURATIONS, ROUTERS, CLIENTS, SERVICE = "WireGuard configurations", "Routers", "OpenVPN clients", "Service"
READ, WRITE = Scope.READ, Scope.WRITE
IMPORT_BODY_MAX = 8 * 1024 * 1024  # the file's 1,000,000 characters, even each escaped as JSON's \uXXXX
DETAILS_SHOWN = 100  # of a refused import's problems, in the error's details (`rows` has every one)
ACCEPTED = "Accepted: the change is committed and a worker carries it out; poll the Location for the status."


@blueprint.after_request
def api_headers(response: Response) -> Response:
    budget = g.get("api_budget")
    if budget is not None:
        response.headers.update(budget.headers())
    response.headers.setdefault("Cache-Control", "no-store")
    response.vary.add("Authorization")
    return response


@blueprint.errorhandler(Exception)
def api_error(error: Exception):
    """Every error of an API view as the API's JSON (ApiError, DomainError, HTTPException, and the unexpected, which
    is logged); nothing of the request's transaction stays."""
    try:
        db.session.rollback()
    except DBAPIError:  # the database ended the connection: drop it
        db.session.invalidate()
    return response_for(error)


def _page(model, pagination, items, **extra) -> Reply:
    """A page of a list, with `next` and the Link header (next and prev) built from the request's own query."""

    def page_url(number: int) -> str:
        return url_for(request.endpoint, _external=True, **{**request.args.to_dict(flat=True), "page": number})

    links = []
    if pagination.has_next:
        links.append(f'<{page_url(pagination.next_num)}>; rel="next"')
    if pagination.has_prev:
        links.append(f'<{page_url(pagination.prev_num)}>; rel="prev"')
    body = model(page=pagination.page, per_page=pagination.per_page, total=pagination.total, items=items,
                 next=page_url(pagination.next_num) if pagination.has_next else None)
    return Reply(200, body, headers={"Link": ", ".join(links)} if links else {})


def _wake_hub(hub_id: int):
    return lambda: wireguard_jobs.sync_hub.wake(hub_id)


# WireGuard configurations: the original design's paths --------------------------------------------------------

@operation(blueprint, "GET", "/vpn", summary="List configurations", tag=CONFIGURATIONS, scope=READ,
           query=ConfigurationQuery, answers=(Answer(200, "A page of the tenant's configurations, newest first.",
                                                     ConfigurationPage, headers=("Link",)),))
def list_configurations(caller: Caller, query: ConfigurationQuery) -> Reply:
    """Filter by `status` and `router_id`; pages of `per_page` (at most 100)."""
    pagination = queries.configurations_page(caller.tenant_id, status=query.status, router_id=query.router_id,
                                             page=query.page, per_page=query.per_page)
    return _page(ConfigurationPage, pagination, [present.configuration(row) for row in pagination.items])


@operation(blueprint, "POST", "/vpn", summary="Create a configuration for a router", tag=CONFIGURATIONS,
           scope=WRITE, body=NewConfiguration, errors=("not_found", "conflict", "pool_exhausted", "subnet_exhausted"),
           answers=(Answer(202, ACCEPTED, Configuration, headers=("Location",)),))
def create_configuration(caller: Caller, body: NewConfiguration) -> Reply:
    """New keys and a new address for a router whose last configuration is revoked (a router added with
    `POST /api/routers` comes with its first one). A router with a live configuration answers 409 `conflict`."""
    router = get_owned_or_404(RouterRow, body.router_id, caller.tenant_id)
    configuration = wireguard.add_configuration(caller.actor(), router)
    presented = present.configuration(configuration)
    return Reply(202, presented, location=presented.url, after=_wake_hub(configuration.hub_id))


@operation(blueprint, "GET", "/vpn/subnet/info", summary="The tenant's subnet and its usage", tag=CONFIGURATIONS,
           scope=READ, answers=(Answer(200, "The subnet (null until the first router), addresses used and free.",
                                       Subnet),))
def subnet_info(caller: Caller) -> Reply:
    subnet = subnet_of(caller.tenant_id)
    hub = db.session.get(HubRow, subnet.hub_id) if subnet is not None else None
    return Reply(200, present.subnet(usage(caller.tenant_id), hub))


def _configuration(caller: Caller, configuration_id: int, options: Sequence = ()) -> VpnConfiguration:
    return get_owned_or_404(VpnConfiguration, configuration_id, caller.tenant_id, options)


@operation(blueprint, "GET", "/vpn/<id:configuration_id>", summary="A configuration", tag=CONFIGURATIONS,
           scope=READ, answers=(Answer(200, "Status, address, public key, hub and timestamps.", Configuration),))
def get_configuration(caller: Caller, configuration_id: int) -> Reply:
    return Reply(200, present.configuration(_configuration(caller, configuration_id)))


@operation(blueprint, "DELETE", "/vpn/<id:configuration_id>", summary="Revoke a configuration",
           tag=CONFIGURATIONS, scope=WRITE, errors=("conflict",),
           answers=(Answer(202, "Accepted: the configuration is `revoking`; a worker removes the peer from the hub "
                           "and it becomes `revoked` (for good: its keys are erased and its address freed).",
                           Configuration),))
def revoke_configuration(caller: Caller, configuration_id: int) -> Reply:
    configuration = _configuration(caller, configuration_id)
    wireguard.request_revocation(caller.actor(), configuration)
    return Reply(202, present.configuration(configuration), after=_wake_hub(configuration.hub_id))


@operation(blueprint, "POST", "/vpn/<id:configuration_id>/rotate", summary="New keys for a configuration",
           tag=CONFIGURATIONS, scope=WRITE, errors=("conflict",),
           answers=(Answer(202, "Accepted: the configuration is `rotating` until the hub holds the new key "
                           "(`next_public_key`); then download it again, the old keys stop working.", Configuration,
                           headers=("Location",)),))
def rotate_configuration(caller: Caller, configuration_id: int) -> Reply:
    """Only an `active` configuration can get new keys."""
    configuration = _configuration(caller, configuration_id)
    wireguard.request_rotation(caller.actor(), configuration)
    presented = present.configuration(configuration)
    return Reply(202, presented, location=presented.url, after=_wake_hub(configuration.hub_id))


@operation(blueprint, "POST", "/vpn/<id:configuration_id>/retry", summary="Provision a failed configuration again",
           tag=CONFIGURATIONS, scope=WRITE, errors=("conflict",),
           answers=(Answer(202, ACCEPTED, Configuration, headers=("Location",)),))
def retry_configuration(caller: Caller, configuration_id: int) -> Reply:
    """Only a `failed` configuration can be retried."""
    configuration = _configuration(caller, configuration_id)
    wireguard.request_retry(caller.actor(), configuration)
    presented = present.configuration(configuration)
    return Reply(202, presented, location=presented.url, after=_wake_hub(configuration.hub_id))


def _download(caller: Caller, configuration_id: int, kind: str) -> File:
    return wireguard_file(caller.actor(), _configuration(caller, configuration_id, wireguard.PEER_PARTS), kind)


DOWNLOAD_NOTE = ("Contains the private key. Only an active configuration can be downloaded; any other answers 409 "
                 "`not_downloadable`. Audited.")


@operation(blueprint, "GET", "/vpn/<id:configuration_id>/download/mikrotik", summary="The RouterOS script (.rsc)",
           tag=CONFIGURATIONS, scope=READ, errors=("not_downloadable", "conflict"), description=DOWNLOAD_NOTE,
           answers=(Answer(200, "The script to `/import` on the MikroTik router (RouterOS 7).",
                           media_type="text/plain", headers=("Content-Disposition",)),))
def download_mikrotik(caller: Caller, configuration_id: int) -> File:
    return _download(caller, configuration_id, "rsc")


@operation(blueprint, "GET", "/vpn/<id:configuration_id>/download/linux", summary="The wg-quick file (.conf)",
           tag=CONFIGURATIONS, scope=READ, errors=("not_downloadable", "conflict"), description=DOWNLOAD_NOTE,
           answers=(Answer(200, "The file for `wg-quick up` (keep the file name: it is the interface name).",
                           media_type="text/plain", headers=("Content-Disposition",)),))
def download_linux(caller: Caller, configuration_id: int) -> File:
    return _download(caller, configuration_id, "conf")


# Routers ---------------------------------------------------------------------------------------------------------

def _router(caller: Caller, router_id: int) -> RouterRow:
    return get_owned_or_404(RouterRow, router_id, caller.tenant_id)


@operation(blueprint, "GET", "/routers", summary="List routers", tag=ROUTERS, scope=READ, query=RouterQuery,
           answers=(Answer(200, "A page of the tenant's routers by name, each with its current configuration.",
                           RouterPage, headers=("Link",)),))
def list_routers(caller: Caller, query: RouterQuery) -> Reply:
    pagination = wireguard.routers_page(caller.tenant_id, search=query.q, page=query.page, per_page=query.per_page)
    return _page(RouterPage, pagination, [present.router(row) for row in pagination.items])


@operation(blueprint, "POST", "/routers", summary="Add a router", tag=ROUTERS, scope=WRITE, body=NewRouter,
           errors=("invalid", "conflict", "pool_exhausted", "subnet_exhausted"),
           answers=(Answer(201, "Created, with its first configuration `pending`: a worker provisions it; poll "
                           "the configuration's URL.", Router, headers=("Location",)),))
def create_router(caller: Caller, body: NewRouter) -> Reply:
    router = wireguard.add_router(caller.actor(), caller.tenant_id, body.name, body.note)
    presented = present.router(router)
    return Reply(201, presented, location=presented.url,
                 after=_wake_hub(router.current_configuration.hub_id))


@operation(blueprint, "GET", "/routers/<id:router_id>", summary="A router", tag=ROUTERS, scope=READ,
           answers=(Answer(200, "The router and its current configuration.", Router),))
def get_router(caller: Caller, router_id: int) -> Reply:
    return Reply(200, present.router(_router(caller, router_id)))


@operation(blueprint, "PATCH", "/routers/<id:router_id>", summary="Rename a router or change its note",
           tag=ROUTERS, scope=WRITE, body=RouterChanges, errors=("invalid", "conflict"),
           answers=(Answer(200, "The router as it is now.", Router),))
def update_router(caller: Caller, router_id: int, body: RouterChanges) -> Reply:
    """Renaming changes nothing on the hub; later downloads carry the new name."""
    router = wireguard.update_router(caller.actor(), _router(caller, router_id), name=body.name, note=body.note)
    return Reply(200, present.router(router))


@operation(blueprint, "DELETE", "/routers/<id:router_id>", summary="Not supported: revoke the configuration",
           tag=ROUTERS, scope=WRITE,
           answers=(Answer(405, "`router_delete_unsupported`: routers are kept as the record of their "
                           "configurations. `DELETE /api/vpn/{id}` revokes a router's configuration; a revoked "
                           "router can get a new one with `POST /api/vpn`.", Error),))
def delete_router(caller: Caller, router_id: int) -> Response:
    router = _router(caller, router_id)
    configuration = router.current_configuration
    hint = f" (its configuration is {configuration.id}: DELETE /api/vpn/{configuration.id})" if configuration else ""
    raise ApiError("router_delete_unsupported", f"Routers are not deleted: they keep the record of their "
                   f"configurations. Revoke the router's configuration instead{hint}.",
                   headers={"Allow": "GET, HEAD, OPTIONS, PATCH"})


@operation(blueprint, "POST", "/routers/import", summary="Import routers from a CSV file", tag=ROUTERS, scope=WRITE,
           body=RouterImportFile, max_body=IMPORT_BODY_MAX,
           errors=("import_invalid", "invalid", "pool_exhausted", "subnet_exhausted"),
           answers=(Answer(201, "Created: every router of the file, each with its first configuration `pending`, "
                           "in one transaction; workers provision them (one batch per hub). The Location is the "
                           "import's progress.", RouterImportResult, headers=("Location",)),
                    Answer(422, "`import_invalid`: the file or some of its rows have errors, and nothing was "
                           "imported: the result with `errors` (the file's) and `rows` (each row with its own), "
                           "and the error envelope (one detail per problem, the first 100).",
                           RouterImportRefused)))
def import_routers(caller: Caller, body: RouterImportFile) -> Reply:
    """The import of the routers page, as JSON: `{"csv": "name,note\\nBranch 1,first floor\\n..."}`. All the
    rows or none: a file with any error answers 422 with every row and what is wrong with it. A password (or
    other secret) column refuses the whole file: passwords never travel in a CSV."""
    result = fleet.import_routers(caller.actor(), caller.tenant_id, body.csv)
    if not result.ok:
        return Reply(422, _refused(result))
    hub_ids = list(result.hub_ids)
    return Reply(201, RouterImportResult.model_validate(result.as_dict()),
                 location=url_for("api.get_router_import", import_id=result.import_id, _external=True),
                 after=lambda: fleet.wake_hubs(hub_ids))


def _refused(result: fleet.ImportResult) -> RouterImportRefused:
    checked = result.checked
    details = [ErrorDetail(field="body.csv", message=problem) for problem in checked.problems]
    details += [ErrorDetail(field=f"body.csv.line.{row.line}", message=error)
                for row in checked.rows for error in row.errors]
    if checked.problems:
        message = "The file cannot be imported: " + " ".join(checked.problems)
    else:
        message = (f"{checked.rows_with_errors} of the file's {len(checked.rows)} rows have errors (see `rows`); "
                   "nothing was imported.")
    error = ErrorInfo(code="import_invalid", message=message, details=details[:DETAILS_SHOWN] or None)
    return RouterImportRefused(error=error, **result.as_dict())


@operation(blueprint, "GET", "/routers/imports/<id:import_id>", summary="An import's progress", tag=ROUTERS,
           scope=READ, answers=(Answer(200, "How many of the import's routers are waiting, active and failed.",
                                       RouterImportProgress),))
def get_router_import(caller: Caller, import_id: int) -> Reply:
    batch = get_owned_or_404(RouterImport, import_id, caller.tenant_id)
    progress = fleet.progress(batch)
    return Reply(200, RouterImportProgress(
        id=batch.id, url=url_for("api.get_router_import", import_id=batch.id, _external=True),
        created_at=batch.created_at, created_by=batch.created_by_label, total=progress.total,
        by_status={str(status): count for status, count in progress.by_status.items()}, waiting=progress.waiting,
        retrying=progress.retrying, active=progress.active, finished=progress.finished,
        failed=[ImportFailure(router_id=failed.router_id, name=failed.name, error=failed.error)
                for failed in progress.failed]))


# OpenVPN clients -------------------------------------------------------------------------------------------------

def _client(caller: Caller, client_id: int) -> VpnClient:
    return get_owned_or_404(VpnClient, client_id, caller.tenant_id)


@operation(blueprint, "GET", "/openvpn/clients", summary="List OpenVPN clients", tag=CLIENTS, scope=READ,
           query=ClientQuery, answers=(Answer(200, "A page of the tenant's clients, newest first.", ClientPage,
                                              headers=("Link",)),))
def list_clients(caller: Caller, query: ClientQuery) -> Reply:
    """Filter by `status` and by part of the name (`q`)."""
    pagination = queries.clients_page(caller.tenant_id, status=query.status, search=query.q, page=query.page,
                                      per_page=query.per_page)
    return _page(ClientPage, pagination, [present.client(row) for row in pagination.items])


@operation(blueprint, "POST", "/openvpn/clients", summary="Add an OpenVPN client", tag=CLIENTS, scope=WRITE,
           body=NewClient, errors=("invalid", "conflict"),
           answers=(Answer(202, "Accepted: the client is `pending` while a worker has its certificate issued on the "
                           "server; poll the Location.", Client, headers=("Location",)),))
def create_client(caller: Caller, body: NewClient) -> Reply:
    client = openvpn.add_client(caller.actor(), caller.tenant_id, body.name)
    presented, client_id = present.client(client), client.id
    return Reply(202, presented, location=presented.url, after=lambda: openvpn_jobs.provision_client.wake(client_id))


@operation(blueprint, "GET", "/openvpn/clients/<id:client_id>", summary="An OpenVPN client", tag=CLIENTS,
           scope=READ, answers=(Answer(200, "Status, server, certificate serial and expiry, session.", Client),))
def get_client(caller: Caller, client_id: int) -> Reply:
    return Reply(200, present.client(_client(caller, client_id)))


@operation(blueprint, "GET", "/openvpn/clients/<id:client_id>/download", summary="The .ovpn profile", tag=CLIENTS,
           scope=READ, errors=("not_downloadable",),
           description="Contains the client's private key; only an `active` client has one. Audited.",
           answers=(Answer(200, "The profile for OpenVPN clients.", media_type="application/x-openvpn-profile",
                           headers=("Content-Disposition",)),))
def download_client(caller: Caller, client_id: int) -> File:
    return openvpn_file(caller.actor(), _client(caller, client_id))


@operation(blueprint, "DELETE", "/openvpn/clients/<id:client_id>", summary="Revoke an OpenVPN client", tag=CLIENTS,
           scope=WRITE, errors=("conflict",),
           answers=(Answer(202, "Accepted: the client is `revoking`; a worker revokes the certificate, installs the "
                           "new CRL and ends its session, and it becomes `revoked`.", Client),))
def revoke_client(caller: Caller, client_id: int) -> Reply:
    client = _client(caller, client_id)
    openvpn.request_revocation(caller.actor(), client)
    return Reply(202, present.client(client), after=lambda: openvpn_jobs.revoke_client.wake(client_id))


@operation(blueprint, "POST", "/openvpn/clients/<id:client_id>/retry", summary="Provision a failed client again",
           tag=CLIENTS, scope=WRITE, errors=("conflict",),
           answers=(Answer(202, ACCEPTED, Client, headers=("Location",)),))
def retry_client(caller: Caller, client_id: int) -> Reply:
    client = _client(caller, client_id)
    openvpn.request_retry(caller.actor(), client)
    presented = present.client(client)
    return Reply(202, presented, location=presented.url,
                 after=lambda: openvpn_jobs.provision_client.wake(client_id))


# The service itself ----------------------------------------------------------------------------------------------

@operation(blueprint, "GET", "/health", summary="Whether the API answers", tag=SERVICE, scope=None,
           errors=("unavailable",), answers=(Answer(200, "The API and its database answer.", Health),))
def health() -> Reply:
    """No token needed. For the whole portal's readiness (Redis, workers) see `/readyz`."""
    try:
        db.session.execute(text("SELECT 1"))
    except DBAPIError:
        raise ApiError("unavailable", "The database does not answer.", status=503) from None
    return Reply(200, Health(status="ok"))


@blueprint.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 document, generated from the operations declared above (no token needed)."""
    response = jsonify(reference.document())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@blueprint.get("/docs")
def docs():
    """The API reference, rendered on the server from the same document (no script, no assets from elsewhere)."""
    response = Response(render_template("api/docs.html", doc=reference.document(), **reference.helpers()))
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("")
def index():
    return jsonify(openapi=url_for("api.openapi_document", _external=True), docs=url_for("api.docs", _external=True),
                   health=url_for("api.health", _external=True))
