"""Pure address arithmetic: the pool of tenant subnets, and host addresses inside one subnet.

In every tenant subnet the hub holds the first host address; routers take the hosts after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address

HUB_HOST_INDEX = 1
FIRST_ROUTER_HOST_INDEX = 2


@dataclass(frozen=True)
class Pool:
    """A range of equal-sized tenant subnets, for example 10.100.0.0-10.254.255.255 in /16s."""

    first: IPv4Address
    last: IPv4Address
    prefix: int

    @classmethod
    def parse(cls, text: str, prefix: int) -> Pool:
        """Parse "FIRST-LAST" (or a CIDR block) into a pool of /prefix subnets; ValueError if unfit."""
        if "-" in text:
            first_text, last_text = (part.strip() for part in text.split("-", 1))
            first, last = ip_address(first_text), ip_address(last_text)
        else:
            block = IPv4Network(text.strip())
            first, last = block.network_address, block.broadcast_address
        if not isinstance(first, IPv4Address) or not isinstance(last, IPv4Address):
            raise ValueError("the pool must be IPv4")
        if not 8 <= prefix <= 30:
            raise ValueError(f"a tenant prefix of /{prefix} is outside /8../30")
        pool = cls(first, last, prefix)
        if int(first) % pool.subnet_size or (int(last) + 1) % pool.subnet_size or last < first:
            raise ValueError(f"{text} does not cover whole /{prefix} subnets")
        return pool

    @property
    def subnet_size(self) -> int:
        return 2 ** (32 - self.prefix)

    @property
    def capacity(self) -> int:
        return (int(self.last) + 1 - int(self.first)) // self.subnet_size

    def subnet(self, index: int) -> IPv4Network:
        if not 0 <= index < self.capacity:
            raise IndexError(f"subnet index {index} is outside a pool of {self.capacity}")
        return IPv4Network((int(self.first) + index * self.subnet_size, self.prefix))

    def slots_overlapping(self, network: IPv4Network) -> range:
        """The slots of this pool that share an address with `network` (any size, inside the pool or not)."""
        first = max(int(network.network_address), int(self.first))
        last = min(int(network.broadcast_address), int(self.last))
        if first > last:
            return range(0)
        start = int(self.first)
        return range((first - start) // self.subnet_size, (last - start) // self.subnet_size + 1)

def lowest_free_index(taken: list[int], capacity: int) -> int | None:
    """The smallest index in range(capacity) not in `taken`, or None when all are taken."""
    taken_set = set(taken)
    return next((index for index in range(capacity) if index not in taken_set), None)


def last_host_index(network: IPv4Network) -> int:
    return network.num_addresses - 2


def usable_hosts(network: IPv4Network) -> int:
    """Host addresses in the subnet, the hub's included (65,534 in a /16)."""
    return network.num_addresses - 2


def host_address(network: IPv4Network, index: int) -> IPv4Address:
    if not HUB_HOST_INDEX <= index <= last_host_index(network):
        raise IndexError(f"host {index} is outside {network}")
    return network.network_address + index


def hub_address(network: IPv4Network) -> IPv4Address:
    return host_address(network, HUB_HOST_INDEX)
