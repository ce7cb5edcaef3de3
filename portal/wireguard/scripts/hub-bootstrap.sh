# Bring a Linux WireGuard hub to the desired state; print what changed, or "unchanged".
# Usage: bash -c "$(cat hub-bootstrap.sh)" hub-bootstrap INTERFACE NFT_RULESET ADDRESS/PREFIX... < wg-config
# stdin is the whole desired WireGuard state in wg(8) format (private key, port, peers) for `wg syncconf`,
# which applies differences only and keeps live sessions. Every step checks before it changes.
set -euo pipefail
interface=$1
ruleset=$2
shift 2
changes=()

if ! ip link show dev "$interface" >/dev/null 2>&1; then
  # The kernel module where there is one, else the userspace implementation.
  ip link add dev "$interface" type wireguard 2>/dev/null || wireguard-go "$interface" >/dev/null
  changes+=("created interface $interface")
fi

current_addresses() { ip -4 -o addr show dev "$interface" | awk '{print $4}'; }
wanted=" $* "
present=" $(current_addresses | tr '\n' ' ') "
for address in "$@"; do
  if [[ $present != *" $address "* ]]; then
    ip addr add "$address" dev "$interface"
    changes+=("added address $address")
  fi
done
for address in $present; do
  if [[ $wanted != *" $address "* ]]; then
    ip addr del "$address" dev "$interface"
    changes+=("removed address $address")
  fi
done

umask 077
before=$(wg showconf "$interface")
wg syncconf "$interface" /dev/stdin
if [[ $(wg showconf "$interface") != "$before" ]]; then
  changes+=("applied keys and peers")
fi

if ! ip link show dev "$interface" | grep -q '[<,]UP[,>]'; then
  ip link set dev "$interface" up
  changes+=("brought $interface up")
fi

if [[ $(sysctl -n net.ipv4.ip_forward) != 1 ]]; then
  sysctl -qw net.ipv4.ip_forward=1
  changes+=("enabled IPv4 forwarding")
fi

table="portal_$interface"
before=$(nft list table inet "$table" 2>/dev/null || true)
printf '%s\n' "$ruleset" | nft -f -
if [[ $(nft list table inet "$table") != "$before" ]]; then
  changes+=("installed firewall table inet $table")
fi

if ((${#changes[@]})); then
  printf '%s\n' "${changes[@]}"
else
  echo unchanged
fi
