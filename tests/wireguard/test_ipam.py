"""Tests for portal/ipam: pool and host arithmetic, and allocating tenant subnets and router addresses."""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network

import pytest
from sqlalchemy import func, select

from portal import create_app
from portal.audit.service import Actor
from portal.extensions import db
from portal.ipam import service as ipam
from portal.ipam.pool import (
    Pool,
    host_address,
    hub_address,
    last_host_index,
    lowest_free_index,
    usable_hosts,
)
from portal.tenancy import service as tenancy
from portal.tenancy.models import Role
from portal.wireguard import service as wireguard
from portal.wireguard.models import Router, Status, VpnConfiguration
from tests import vectors
from tests.conftest import add_router, login, post, run_worker, unique

DEFAULT_POOL = "10.100.0.0-10.254.255.255"
# Two /29s at the very end of the default pool: subnets are handed out lowest first, so no other test reaches them.
SMALL_POOL = "10.254.255.0-10.254.255.15"
TEST = Actor.system("test")
THREADS = 8


# Pure arithmetic ----------------------------------------------------------------------------------

def test_default_pool_holds_155_tenant_slash16s():
    pool = Pool.parse(DEFAULT_POOL, 16)
    assert pool.capacity == 155
    assert pool.subnet(0) == IPv4Network("10.100.0.0/16")
    assert pool.subnet(1) == IPv4Network("10.101.0.0/16")
    assert pool.subnet(154) == IPv4Network("10.254.0.0/16")
    for index in (-1, 155):
        with pytest.raises(IndexError):
            pool.subnet(index)


def test_pool_from_a_cidr_block():
    pool = Pool.parse("10.0.0.0/8", 16)
    assert pool.capacity == 256
    assert pool.subnet(255) == IPv4Network("10.255.0.0/16")


@pytest.mark.parametrize(("network", "slots"), [
    ("10.100.0.0/16", [0]),
    ("10.150.0.0/16", [50]),
    ("10.254.0.0/16", [154]),
    ("10.99.0.0/16", []),  # before the pool
    ("10.255.0.0/16", []),  # after it
    ("10.100.7.0/24", [0]),  # a smaller subnet, from other pool settings, still blocks its slot
    ("10.100.0.0/15", [0, 1]),  # a larger one blocks every slot it covers
    ("10.0.0.0/8", list(range(155))),
])
def test_slots_overlapping_a_subnet(network, slots):
    assert list(Pool.parse(DEFAULT_POOL, 16).slots_overlapping(IPv4Network(network))) == slots


@pytest.mark.parametrize(("text", "prefix"), [
    ("10.100.0.1-10.254.255.255", 16),  # starts inside a /16
    ("10.100.0.0-10.254.255.254", 16),  # ends inside one
    ("10.100.128.0-10.254.255.255", 16),
    ("10.2.0.0-10.1.255.255", 16),  # backwards
    ("10.0.0.0/24", 16),  # smaller than one subnet
    (DEFAULT_POOL, 31),  # no room for hub and routers
    (DEFAULT_POOL, 7),
    ("fd00::-fd00::ffff", 16),
    ("nonsense", 16),
])
def test_misaligned_or_malformed_pools_are_rejected(text, prefix):
    with pytest.raises(ValueError):
        Pool.parse(text, prefix)


def test_host_arithmetic():
    slash16, slash24 = IPv4Network("10.100.0.0/16"), IPv4Network("10.100.7.0/24")
    assert usable_hosts(slash16) == 65534
    assert usable_hosts(slash24) == 254
    assert hub_address(slash16) == IPv4Address("10.100.0.1")
    assert host_address(slash24, 2) == IPv4Address("10.100.7.2")
    assert host_address(slash24, last_host_index(slash24)) == IPv4Address("10.100.7.254")
    for outside in (0, 255):  # the network and broadcast addresses
        with pytest.raises(IndexError):
            host_address(slash24, outside)


def test_lowest_free_index():
    assert lowest_free_index([], 3) == 0
    assert lowest_free_index([0, 1, 3], 5) == 2
    assert lowest_free_index([2, 0, 1], 3) is None


# Allocation in the app ------------------------------------------------------------------------------

def add(client, name: str) -> int:
    """Add a router through the browser flow; its id."""
    response = add_router(client, name)
    assert response.status_code == 303, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("/", 1)[1])


def address_of(app, router_id: int) -> str:
    with app.app_context():
        return db.session.get(Router, router_id).current_configuration.address


def usage(app, tenant_id: int) -> ipam.SubnetUsage | None:
    with app.app_context():
        return ipam.usage(tenant_id)


def counts(app, tenant_id: int) -> tuple[int, int]:
    """(routers, configurations) of the tenant."""
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).where(model.tenant_id == tenant_id))
                     for model in (Router, VpnConfiguration))


def field_error(page: str) -> str:
    match = re.search(r'<p class="field-error" id="name-error">([^<]*)</p>', page)
    assert match, "no error next to the name field"
    return match.group(1)


def new_tenant_admin(app) -> tuple[int, str]:
    with app.app_context():
        tenant = tenancy.create_tenant(TEST, unique("Tenant"))
        email = f"ipam-{os.getpid()}-{tenant.id}@tenant.example"
        tenancy.create_user(TEST, email, vectors.PASSWORD, Role.TENANT_ADMIN, tenant.id)
        db.session.commit()
        return tenant.id, email


@contextmanager
def small_pool_app():
    """An app on the same database whose pool holds only two /29 tenant subnets."""
    small = create_app({"IPAM_POOL": SMALL_POOL, "IPAM_TENANT_PREFIX": 29})
    try:
        yield small
    finally:
        with small.app_context():
            db.engine.dispose()


def test_first_router_allocates_the_tenant_subnet(app, admin_client):
    tenant_id = admin_client.tenant_id
    assert usage(app, tenant_id) is None
    assert "allocated with your first router" in admin_client.get("/routers/subnet").get_data(as_text=True)

    router_id = add(admin_client, "First")

    with app.app_context():
        subnet = ipam.subnet_of(tenant_id)
        network = subnet.ip_network
        assert network.prefixlen == 24
        assert len(ipam.configured_pool().slots_overlapping(network)) == 1
    assert address_of(app, router_id) == str(network.network_address + 2)  # .1 is the hub's
    page = admin_client.get("/routers/subnet").get_data(as_text=True)
    assert f"{network}</span>: 2 of 254 addresses used" in page


def test_each_tenant_gets_its_own_subnet(app, admin_client):
    other_tenant_id, other_email = new_tenant_admin(app)
    other = app.test_client()
    assert login(other, other_email).status_code == 302
    add(admin_client, "Mine")
    add(other, "Theirs")
    mine, theirs = usage(app, admin_client.tenant_id).network, usage(app, other_tenant_id).network
    assert not mine.overlaps(theirs)


def test_routers_take_the_lowest_free_address_and_revoked_ones_are_reused(app, admin_client):
    tenant_id = admin_client.tenant_id
    routers = [add(admin_client, name) for name in ("Alpha", "Bravo", "Charlie")]
    network = usage(app, tenant_id).network
    assert [address_of(app, router_id) for router_id in routers] == [
        str(network.network_address + host) for host in (2, 3, 4)]
    assert (usage(app, tenant_id).used, usage(app, tenant_id).free, usage(app, tenant_id).total) == (4, 250, 254)
    run_worker(app)

    bravo = routers[1]
    assert post(admin_client, f"/routers/{bravo}/revoke").status_code == 303
    run_worker(app)

    with app.app_context():
        assert db.session.get(Router, bravo).current_configuration.status == Status.REVOKED
    assert usage(app, tenant_id).used == 3
    assert address_of(app, add(admin_client, "Delta")) == str(network.network_address + 3)
    assert address_of(app, add(admin_client, "Echo")) == str(network.network_address + 5)
    assert usage(app, tenant_id).used == 5  # the hub, Alpha, Charlie, Delta, Echo


def test_allocation_counts_up_without_reading_the_used_addresses(app, admin_client):
    tenant_id = admin_client.tenant_id
    add(admin_client, "Low")
    with app.app_context():
        subnet = ipam.subnet_of(tenant_id)
        network = subnet.ip_network
        subnet.next_host = 253  # as if .2 .. .252 were taken: the allocator must not look for gaps
        db.session.commit()
    assert address_of(app, add(admin_client, "High")) == str(network.network_address + 253)
    assert address_of(app, add(admin_client, "Last")) == str(network.network_address + 254)
    with app.app_context(), pytest.raises(ipam.SubnetExhausted):
        wireguard.add_router(TEST, tenant_id, "One too many")


def in_threads(app, work, arguments: list) -> list[BaseException]:
    """Run work(argument) for each argument at once, each thread in its own app context; the errors raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(arguments))

    def run(argument) -> None:
        try:
            with app.app_context():
                start.wait(timeout=30)
                work(argument)
        except BaseException as error:  # reported by the caller, from the test's own thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(argument,)) for argument in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_concurrent_routers_in_one_subnet_get_distinct_addresses(app, admin_client):
    tenant_id = admin_client.tenant_id
    add(admin_client, "Seed")  # the subnet exists; now only the address counter is contended

    def add_two(thread: int) -> None:
        for number in range(2):
            wireguard.add_router(TEST, tenant_id, f"Thread {thread} router {number}")
            db.session.commit()

    assert in_threads(app, add_two, list(range(THREADS))) == []
    with app.app_context():
        hosts = sorted(db.session.scalars(select(VpnConfiguration.host_index)
                                          .where(VpnConfiguration.tenant_id == tenant_id)))
    assert hosts == list(range(2, 2 + 1 + 2 * THREADS))  # no gap, no duplicate
    assert usage(app, tenant_id).used == 1 + 1 + 2 * THREADS


def test_a_full_subnet_refuses_a_new_router_with_a_clear_message(app, admin_client):
    tenant_id = admin_client.tenant_id
    with app.app_context():
        for number in range(253):  # .2 .. .254 of the tenant's /24
            wireguard.add_router(TEST, tenant_id, f"Router {number}")
        db.session.commit()
    assert usage(app, tenant_id).free == 0

    response = add_router(admin_client, "Router 253")

    assert response.status_code == 422
    message = field_error(response.get_data(as_text=True))
    assert "no free address left" in message and "revoke a router first" in message
    assert counts(app, tenant_id) == (253, 253)


def test_an_exhausted_pool_refuses_a_new_tenant_with_a_clear_message(app):
    with small_pool_app() as small:
        tenants = [new_tenant_admin(small) for _ in range(3)]
        with small.app_context():
            for tenant_id, _ in tenants[:2]:
                wireguard.add_router(TEST, tenant_id, "Core")
            db.session.commit()
            assert [str(ipam.subnet_of(tenant_id).network) for tenant_id, _ in tenants[:2]] == [
                "10.254.255.0/29", "10.254.255.8/29"]
            with pytest.raises(ipam.PoolExhausted, match="no free /29 left"):
                wireguard.add_router(TEST, tenants[2][0], "Core")
            db.session.rollback()

        client = small.test_client()
        assert login(client, tenants[2][1]).status_code == 302
        response = add_router(client, "Core")

        assert response.status_code == 422
        assert "The address pool 10.254.255.0-10.254.255.15 has no free /29 left" in field_error(
            response.get_data(as_text=True))
        assert counts(small, tenants[2][0]) == (0, 0)
        assert usage(small, tenants[2][0]) is None


def test_a_new_tenant_never_gets_a_slot_overlapping_a_subnet_from_older_settings(app, tenant_admin, other_tenant_admin):
    """Changing the pool or prefix after tenants exist must not hand out overlapping subnets."""
    from portal.wireguard.service import default_hub

    with app.app_context():
        hub_id = default_hub().id
        old = ipam.ensure_subnet(tenant_admin[0], hub_id)  # a /24 under the test settings
        db.session.commit()
        coarse = Pool.parse("10.100.0.0-10.254.255.255", 16)
        app.config["PORTAL_IPAM_TENANT_PREFIX"] = 16
        try:
            new = ipam.ensure_subnet(other_tenant_admin[0], hub_id)
            assert not new.ip_network.overlaps(old.ip_network)
            assert list(coarse.slots_overlapping(old.ip_network)) == [0]
        finally:
            app.config["PORTAL_IPAM_TENANT_PREFIX"] = 24
            db.session.rollback()
