"""Allocating tenant subnets from the pool and router addresses inside them.

Addresses come from a per-subnet counter plus a free list of returned addresses, both under a row lock
on the subnet, so allocation costs the same in an empty subnet and in a full one. Unique indexes on
(subnet, address) among live configurations and on the subnet per tenant are the final guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from portal.errors import DomainError
from portal.extensions import db
from portal.ipam.models import FreeAddress, TenantSubnet
from portal.ipam.pool import FIRST_ROUTER_HOST_INDEX, Pool, last_host_index, lowest_free_index, usable_hosts
from portal.live.reuse import reuse_until_news

SUBNET_RACE_RETRIES = 5


class PoolExhausted(DomainError):
    code = "pool_exhausted"


class SubnetExhausted(DomainError):
    code = "subnet_exhausted"


def configured_pool() -> Pool:
    return Pool.parse(current_app.config["PORTAL_IPAM_POOL"], current_app.config["PORTAL_IPAM_TENANT_PREFIX"])


def subnet_of(tenant_id: int) -> TenantSubnet | None:
    return db.session.scalar(select(TenantSubnet).where(TenantSubnet.tenant_id == tenant_id))


def ensure_subnet(tenant_id: int, hub_id: int) -> TenantSubnet:
    """The tenant's subnet, locked, allocated from the pool (lowest free slot) on first use."""
    pool = configured_pool()
    for _ in range(SUBNET_RACE_RETRIES):
        existing = locked_subnet(tenant_id)
        if existing is not None:
            return existing
        # Any existing subnet blocks the slots it overlaps, even one allocated under other pool settings.
        taken = [slot for network in db.session.scalars(select(TenantSubnet.network))
                 for slot in pool.slots_overlapping(IPv4Network(network))]
        index = lowest_free_index(taken, pool.capacity)
        if index is None:
            raise PoolExhausted(
                f"The address pool {pool.first}-{pool.last} has no free /{pool.prefix} left for a new tenant."
            )
        subnet = TenantSubnet(tenant_id=tenant_id, hub_id=hub_id, network=str(pool.subnet(index)),
                              next_host=FIRST_ROUTER_HOST_INDEX)
        try:
            with db.session.begin_nested():
                db.session.add(subnet)
        except IntegrityError:
            continue  # another transaction took this slot, or this tenant's subnet: look again
        return subnet
    raise PoolExhausted("The address pool is too busy right now; try again.")


def locked_subnet(tenant_id: int) -> TenantSubnet | None:
    """The tenant's subnet, its row locked until the transaction ends: allocations queue up here."""
    return db.session.scalars(
        select(TenantSubnet).where(TenantSubnet.tenant_id == tenant_id).with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def allocate_host(subnet: TenantSubnet) -> int:
    """The lowest free host index in a subnet the caller has locked (`locked_subnet` or `ensure_subnet`)."""
    lowest_returned = (select(func.min(FreeAddress.host_index)).where(FreeAddress.subnet_id == subnet.id)
                       .scalar_subquery())
    returned = db.session.execute(
        delete(FreeAddress)
        .where(FreeAddress.subnet_id == subnet.id, FreeAddress.host_index == lowest_returned)
        .returning(FreeAddress.host_index)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if returned is not None:
        return returned
    if subnet.next_host > last_host_index(subnet.ip_network):
        raise SubnetExhausted(f"The subnet {subnet.network} has no free address left; revoke a router first.")
    index = subnet.next_host
    subnet.next_host = index + 1
    return index


def release_host(subnet_id: int, host_index: int) -> None:
    db.session.add(FreeAddress(subnet_id=subnet_id, host_index=host_index))


@dataclass(frozen=True)
class SubnetUsage:
    network: IPv4Network
    used: int
    total: int

    @property
    def free(self) -> int:
        return self.total - self.used

    @property
    def percent(self) -> float:
        return round(100 * self.used / self.total, 2)


def usage(tenant_id: int) -> SubnetUsage | None:
    """Used, free and total host addresses of the tenant's subnet (the hub's counts as used), reused until news
    in the tenant's room: taking or freeing an address publishes a usage hint (`portal.live.usage_changed`)."""
    counted = reuse_until_news(tenant_id, "ipam:usage", lambda: _count(tenant_id))
    if counted is None:
        return None
    network, used = counted
    network = IPv4Network(network)
    return SubnetUsage(network=network, used=used, total=usable_hosts(network))


def _count(tenant_id: int) -> tuple[str, int] | None:
    """The tenant's subnet and how many of its addresses are used (the hub's and the routers')."""
    returned_count = select(func.count()).where(FreeAddress.subnet_id == TenantSubnet.id).scalar_subquery()
    found = db.session.execute(select(TenantSubnet.network, TenantSubnet.next_host, returned_count)
                               .where(TenantSubnet.tenant_id == tenant_id)).first()
    if found is None:
        return None
    network, next_host, returned = found
    return network, next_host - FIRST_ROUTER_HOST_INDEX - returned + 1
