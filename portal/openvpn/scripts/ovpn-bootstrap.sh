# Bring an OpenVPN server to the portal's desired state; print one line per change, or "unchanged".
# Usage: bash -c "$(cat ovpn-bootstrap.sh)" ovpn-bootstrap BASE NETWORK NETMASK PORT PROTO MGMT_PORT < ovpn-client.sh
#
# Creates what is missing under BASE, and changes nothing that is already right:
#   BASE/pki          easy-rsa PKI with EC (prime256v1) keys: CA "portal-ca", server certificate "server"
#   BASE/crl.pem      the installed CRL (0644); regenerated when missing, expiring within 30 days, or not
#                     listing exactly the index's revoked serials
#   BASE/tc.key       the tls-crypt key
#   BASE/server.conf  rewritten when it differs from what the arguments give (`dh none`, `crl-verify`, the
#                     management interface on 127.0.0.1:MGMT_PORT, status file BASE/status.log, version 3)
#   BASE/bin/ovpn-client  stdin (the project's ovpn-client.sh), installed atomically when its content differs
# With systemd running (/run/systemd/system exists) the daemon runs as portal-openvpn@INSTANCE.service, INSTANCE
# being `systemd-escape --path BASE` (the template /etc/systemd/system/portal-openvpn@.service runs
# `openvpn --config BASE/server.conf` in BASE): it is enabled, started when inactive and restarted when a
# certificate, a key, server.conf or the unit changed. Without systemd the caller runs openvpn itself.
# Exit status: 0 done, 1 failed, 2 bad arguments, 75 the PKI lock stayed busy.
# shellcheck shell=bash
set -euo pipefail
umask 077
export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf 'ovpn-bootstrap: %s\n' "$*" >&2; }
die() { say "$1"; exit "${2:-1}"; }

(($# == 6)) || die "usage: ovpn-bootstrap BASE NETWORK NETMASK PORT PROTO MGMT_PORT < ovpn-client.sh" 2
base=$1 network=$2 netmask=$3 port=$4 proto=$5 mgmt_port=$6

# --- arguments ------------------------------------------------------------------------------------------------

octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])'
quad="^$octet\\.$octet\\.$octet\\.$octet\$"
to_int() { local a b c d; IFS=. read -r a b c d <<<"$1"; echo $((((a * 256 + b) * 256 + c) * 256 + d)); }

[[ $base =~ ^(/[A-Za-z0-9._-]+)+$ && "$base/" != *'/./'* && "$base/" != *'/../'* ]] ||
  die "BASE must be an absolute path of letters, digits and ._- (no . or .. parts)" 2
[[ $network =~ $quad ]] || die "NETWORK must be a dotted IPv4 address" 2
[[ $netmask =~ $quad ]] || die "NETMASK must be a dotted IPv4 netmask" 2
mask=$(to_int "$netmask")
inverse=$((~mask & 0xFFFFFFFF))
(((inverse & (inverse + 1)) == 0 && mask != 0)) || die "NETMASK $netmask is not a netmask" 2
(($(to_int "$network") & inverse)) && die "NETWORK $network has host bits set for $netmask" 2
for value in "$port" "$mgmt_port"; do
  if ! [[ $value =~ ^[1-9][0-9]{0,4}$ ]] || ((value > 65535)); then
    die "ports must be numbers from 1 to 65535" 2
  fi
done
[[ $proto == udp || $proto == tcp ]] || die "PROTO must be udp or tcp" 2

# --- tools and input ------------------------------------------------------------------------------------------

openvpn_bin=$(command -v openvpn) || die "openvpn is not installed (apt-get install openvpn)"
easyrsa_bin=$(command -v easyrsa || true)
[[ -n $easyrsa_bin ]] || easyrsa_bin=/usr/share/easy-rsa/easyrsa
[[ -x $easyrsa_bin ]] || die "easy-rsa is not installed (apt-get install easy-rsa)"
for tool in openssl flock awk; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

workdir=$(mktemp -d)
trap 'rm -rf -- "$workdir"' EXIT
cat >"$workdir/ovpn-client"
[[ $(head -n 1 "$workdir/ovpn-client") == '#!/bin/bash' ]] || die "stdin must be the text of ovpn-client.sh" 2

changes=()
restart=0
pki="$base/pki"

while read -r variable; do unset "$variable"; done < <(compgen -v EASYRSA_ || true)
export EASYRSA_BATCH=1 EASYRSA_NO_VARS=1 EASYRSA_PKI="$pki" EASYRSA_ALGO=ec EASYRSA_CURVE=prime256v1 \
  EASYRSA_CRL_DAYS=3650

easyrsa() {
  if ! (cd "$base" && "$easyrsa_bin" "$@") >"$workdir/easyrsa.log" 2>&1; then
    say "easyrsa $1 failed:"
    tail -n 8 "$workdir/easyrsa.log" >&2
    exit 1
  fi
}

install_file() {  # install_file SOURCE TARGET MODE: atomic replace (temp file beside TARGET + rename)
  local temporary
  temporary=$(mktemp "$(dirname -- "$2")/.install.XXXXXX")
  cat -- "$1" >"$temporary"
  chmod "$3" "$temporary"
  mv -f -- "$temporary" "$2"
}

# --- directories and the lock ---------------------------------------------------------------------------------

if [[ ! -d $base ]]; then
  (umask 022 && mkdir -p -- "$base")
  changes+=("created $base")
fi
(umask 022 && mkdir -p -- "$base/bin")
exec {lock_fd}>>"$base/.lock"
flock -w 20 "$lock_fd" || die "the PKI at $pki is busy (lock $base/.lock held over 20 s)" 75

# --- PKI --------------------------------------------------------------------------------------------------------

if [[ ! -f $pki/ca.crt ]]; then
  [[ ! -e $pki/private/ca.key ]] || die "$pki has a CA key but no ca.crt: repair the PKI by hand"
  [[ ! -s $pki/index.txt ]] || die "$pki has issued certificates but no CA: repair the PKI by hand"
  easyrsa init-pki
  EASYRSA_REQ_CN=portal-ca easyrsa build-ca nopass
  changes+=("created the PKI and the CA portal-ca in $pki")
  restart=1
fi

server_valid=$(awk -F'\t' '$6 == "/CN=server" && $1 == "V" { found = 1 } END { print found + 0 }' "$pki/index.txt")
if ((!server_valid)) || [[ ! -f $pki/issued/server.crt || ! -f $pki/private/server.key ]]; then
  ((!server_valid)) || die "the server certificate is in the index but its files are missing from $pki"
  rm -f -- "$pki/reqs/server.req" "$pki/private/server.key" "$pki/issued/server.crt"
  easyrsa build-server-full server nopass
  changes+=("issued the server certificate")
  restart=1
fi

if [[ ! -s $base/tc.key ]]; then
  "$openvpn_bin" --genkey tls-crypt "$workdir/tc.key" >/dev/null
  install_file "$workdir/tc.key" "$base/tc.key" 0600
  changes+=("created the tls-crypt key $base/tc.key")
  restart=1
fi

crl_is_current() {
  [[ -s $base/crl.pem ]] || return 1
  openssl crl -in "$base/crl.pem" -noout 2>/dev/null || return 1
  local next
  next=$(openssl crl -in "$base/crl.pem" -noout -nextupdate)
  next=$(date -u -d "${next#nextUpdate=}" +%s) || return 1
  ((next > $(date +%s) + 30 * 86400)) || return 1
  [[ $(awk -F'\t' '$1 == "R" { print $4 }' "$pki/index.txt" | sort) == \
     "$(openssl crl -in "$base/crl.pem" -noout -text | awk '$1 == "Serial" && $2 == "Number:" { print $3 }' | sort)" ]]
}
if ! crl_is_current; then
  easyrsa gen-crl
  install_file "$pki/crl.pem" "$base/crl.pem" 0644
  changes+=("installed the CRL $base/crl.pem")
fi

# --- server.conf ----------------------------------------------------------------------------------------------

cat >"$workdir/server.conf" <<EOF
# Written by the VPN portal (ovpn-bootstrap); rewritten when it differs from the portal's settings.
dev tun
proto $proto
port $port
topology subnet
server $network $netmask
dh none
ca $pki/ca.crt
cert $pki/issued/server.crt
key $pki/private/server.key
tls-crypt $base/tc.key
crl-verify $base/crl.pem
keepalive 10 60
status $base/status.log 1
status-version 3
management 127.0.0.1 $mgmt_port
persist-key
persist-tun
verb 3
EOF
if [[ ! -f $base/server.conf ]]; then
  install_file "$workdir/server.conf" "$base/server.conf" 0644
  changes+=("wrote $base/server.conf")
  restart=1
elif ! cmp -s "$workdir/server.conf" "$base/server.conf"; then
  install_file "$workdir/server.conf" "$base/server.conf" 0644
  changes+=("rewrote $base/server.conf (it differed from the requested settings)")
  restart=1
fi

# --- the client script ----------------------------------------------------------------------------------------

if [[ ! -f $base/bin/ovpn-client ]]; then
  install_file "$workdir/ovpn-client" "$base/bin/ovpn-client" 0755
  changes+=("installed $base/bin/ovpn-client")
elif ! cmp -s "$workdir/ovpn-client" "$base/bin/ovpn-client"; then
  install_file "$workdir/ovpn-client" "$base/bin/ovpn-client" 0755
  changes+=("updated $base/bin/ovpn-client")
fi

# --- the daemon, under systemd --------------------------------------------------------------------------------

if [[ -d /run/systemd/system ]]; then
  unit="portal-openvpn@$(systemd-escape --path "$base").service"
  cat >"$workdir/unit" <<EOF
[Unit]
Description=OpenVPN server of the VPN portal in %f
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
WorkingDirectory=%f
ExecStart=$openvpn_bin --suppress-timestamps --config %f/server.conf
Restart=on-failure
RestartSec=5s

[Install]
WantedBy=multi-user.target
EOF
  template=/etc/systemd/system/portal-openvpn@.service
  if ! cmp -s "$workdir/unit" "$template"; then
    install_file "$workdir/unit" "$template" 0644
    systemctl daemon-reload
    changes+=("installed the unit $template")
    restart=1
  fi
  if ! systemctl is-enabled --quiet "$unit"; then
    systemctl enable --quiet "$unit"
    changes+=("enabled $unit")
  fi
  if ! systemctl is-active --quiet "$unit"; then
    systemctl start "$unit" || die "$unit did not start (journalctl -u $unit says why)"
    changes+=("started $unit")
  elif ((restart)); then
    systemctl restart "$unit" || die "$unit did not restart (journalctl -u $unit says why)"
    changes+=("restarted $unit")
  fi
fi

if ((${#changes[@]})); then
  printf '%s\n' "${changes[@]}"
else
  echo unchanged
fi
