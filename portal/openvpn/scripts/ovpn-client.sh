#!/bin/bash
# Manage the OpenVPN client certificates of one server; installed by ovpn-bootstrap.sh as BASE/bin/ovpn-client.
# Usage: BASE/bin/ovpn-client create NAME | revoke NAME | status
#
#   create NAME   Issue NAME's certificate if it has none (EC prime256v1, no passphrase), then print
#                 "# serial: HEX", "# not-after: YYYY-MM-DDTHH:MM:SSZ" and the inline blocks <ca>, <cert>,
#                 <key>, <tls-crypt> on stdout. Running it again prints the same material. Exit 3 if NAME's
#                 certificate is revoked (a revoked name is never issued again).
#   revoke NAME   Ensure NAME is revoked: "absent" if it was never issued, else `easyrsa revoke` unless the
#                 index already says revoked ("revoked" / "already revoked"), and in both cases regenerate the
#                 CRL, install it as BASE/crl.pem (temp file + rename) and kill NAME's live sessions through the
#                 management interface, by real address (exit 1 if it listens but does not answer, so the caller
#                 runs revoke again). A crash between revoke and gen-crl is repaired by running it again.
#   status        One line per connected client: client TAB NAME TAB REAL_ADDRESS TAB VIRTUAL_ADDRESS TAB
#                 BYTES_RECEIVED TAB BYTES_SENT TAB CONNECTED_SINCE_EPOCH, from the management interface when it
#                 listens, else from BASE/status.log if it is fresh (a stopped server has no clients).
#
# BASE is the parent of this script's directory. NAME must fully match [A-Za-z0-9][A-Za-z0-9_.-]{0,63} (the
# portal's rule) and not be "server" (the server's own certificate). Exit status: 0 done, 1 failed, 2 bad
# arguments, 3 revoked, 75 the PKI lock stayed busy. stderr says what happened (the portal's audit log keeps
# it); it never carries key material.
set -euo pipefail
umask 077
export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

NAME_RULE='^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
LOCK_SECONDS=20
MGMT_SECONDS=5
STATUS_FRESH_SECONDS=30
CRL_DAYS=3650  # the CRL is replaced at every revoke; an expired CRL makes OpenVPN refuse every client

say() { printf 'ovpn-client: %s\n' "$*" >&2; }
die() { say "$1"; exit "${2:-1}"; }
usage() { die "usage: ovpn-client create NAME | revoke NAME | status" 2; }

script=$(readlink -f -- "${BASH_SOURCE[0]}")
BASE=$(dirname -- "$(dirname -- "$script")")
PKI="$BASE/pki"

need_base() {
  [[ -f "$BASE/server.conf" && -f "$PKI/index.txt" ]] ||
    die "$BASE is not a bootstrapped OpenVPN server (no server.conf or pki/index.txt)"
}

check_name() {
  local name=$1
  [[ $name =~ $NAME_RULE ]] || die "invalid client name (allowed: [A-Za-z0-9][A-Za-z0-9_.-]{0,63})" 2
  [[ $name != server ]] || die "the name server is reserved for the server's own certificate" 2
}

# --- easy-rsa -------------------------------------------------------------------------------------------------

easyrsa_bin=$(command -v easyrsa || true)
[[ -n $easyrsa_bin ]] || easyrsa_bin=/usr/share/easy-rsa/easyrsa
while read -r variable; do unset "$variable"; done < <(compgen -v EASYRSA_ || true)
export EASYRSA_BATCH=1 EASYRSA_NO_VARS=1 EASYRSA_PKI="$PKI" EASYRSA_ALGO=ec EASYRSA_CURVE=prime256v1 \
  EASYRSA_CRL_DAYS="$CRL_DAYS"

workdir=$(mktemp -d)
trap 'rm -rf -- "$workdir"' EXIT

easyrsa() {
  # Quiet on success; on failure the tail of its output (easy-rsa never prints keys).
  if ! (cd "$BASE" && "$easyrsa_bin" "$@") >"$workdir/easyrsa.log" 2>&1; then
    say "easyrsa $1 failed:"
    tail -n 8 "$workdir/easyrsa.log" >&2
    exit 1
  fi
}

lock() {
  exec {lock_fd}>>"$BASE/.lock"
  flock -w "$LOCK_SECONDS" "$lock_fd" || die "the PKI at $PKI is busy (lock $BASE/.lock held over ${LOCK_SECONDS} s)" 75
}

# The index line fields: status, expiry, revocation date, serial, file, DN. NAME is validated, so the exact
# string comparison below is safe; the state is "valid" if any entry of NAME is valid, else "revoked" if any
# is revoked, else "absent" (an expired-only name counts as absent).
state_of() {
  awk -F'\t' -v dn="/CN=$1" '
    $6 == dn && $1 == "V" { valid = 1 }
    $6 == dn && $1 == "R" { revoked = 1 }
    END { print valid ? "valid" : revoked ? "revoked" : "absent" }' "$PKI/index.txt"
}

serial_of() {
  awk -F'\t' -v dn="/CN=$1" -v want="$2" '$6 == dn && $1 == want { serial = $4 } END { print serial }' \
    "$PKI/index.txt"
}

pem() {  # the PEM block(s) of a file, without comments or text dumps
  sed -n '/^-----BEGIN /,/^-----END /p' "$1"
}

install_crl() {
  easyrsa gen-crl
  local temporary
  temporary=$(mktemp "$BASE/.crl.XXXXXX")
  cp -- "$PKI/crl.pem" "$temporary"
  chmod 0644 "$temporary"  # readable by an openvpn that dropped its privileges
  mv -f -- "$temporary" "$BASE/crl.pem"
  local count
  count=$(openssl crl -in "$BASE/crl.pem" -noout -text | grep -c 'Serial Number:' || true)
  say "installed a new CRL at $BASE/crl.pem ($count revoked)"
}

# --- the management interface ---------------------------------------------------------------------------------

management_port() {
  awk '$1 == "management" && $2 == "127.0.0.1" && $3 ~ /^[0-9]+$/ { print $3; exit }' "$BASE/server.conf"
}

# Open fd $mgmt and read the greeting. Returns 1 when nothing listens (no server running), 2 when it listens
# but does not greet within MGMT_SECONDS (OpenVPN serves one management client at a time; others wait).
management_open() {
  local port line
  port=$(management_port)
  [[ -n $port ]] || return 1
  { exec {mgmt}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  if ! IFS= read -r -t "$MGMT_SECONDS" -u "$mgmt" line || [[ $line != '>INFO:'* ]]; then
    management_close
    return 2
  fi
}

management_close() {
  { printf 'quit\n' >&"$mgmt"; } 2>/dev/null || true
  exec {mgmt}>&-
}

# Send one command; its reply lines (CR removed, asynchronous ">..." notifications skipped) go to stdout.
# Multi-line replies end with END; one-line replies start with SUCCESS: or ERROR:.
management_command() {
  local line
  printf '%s\n' "$1" >&"$mgmt"
  while IFS= read -r -t "$MGMT_SECONDS" -u "$mgmt" line; do
    line=${line%$'\r'}
    case $line in
      '>'*) continue ;;
      END) return 0 ;;
      SUCCESS:* | ERROR:*) printf '%s\n' "$line"; return 0 ;;
      *) printf '%s\n' "$line" ;;
    esac
  done
  say "the management interface did not answer '$1' in ${MGMT_SECONDS} s"
  return 1
}

# status-version 3 (management `status 3`, and the status file) lists clients as
# CLIENT_LIST CN REAL VIRTUAL VIRTUAL6 BYTES_RECEIVED BYTES_SENT SINCE SINCE_EPOCH USERNAME ...
# A client still in its handshake has no virtual address yet (and the CN UNDEF): it is not connected.
clients_of() {
  awk -F'\t' -v rule="$NAME_RULE" '$1 == "CLIENT_LIST" && $2 ~ rule && $3 != "" && $4 != "" {
    printf "client\t%s\t%s\t%s\t%s\t%s\t%s\n", $2, $3, $4, $6, $7, $9 }'
}

kill_sessions() {
  local name=$1 address reply killed=0 opened=0
  management_open || opened=$?
  if ((opened == 1)); then
    say "no management interface listening: no live session of $name to kill"
    return 0
  elif ((opened)); then
    die "the management interface did not answer in ${MGMT_SECONDS} s: a session of $name may still be live (run revoke again)"
  fi
  local table
  table=$(management_command 'status 3') || { management_close; die "cannot list the sessions of $name"; }
  while IFS=$'\t' read -r _ client address _; do
    [[ $client == "$name" && $address =~ ^[0-9A-Fa-f.:]+$ ]] || continue
    reply=$(management_command "kill $address") || { management_close; die "no answer to kill $address"; }
    say "kill $address ($name): $reply"
    killed=$((killed + 1))
  done < <(clients_of <<<"$table")
  management_close
  ((killed)) || say "no live session of $name"
}

# --- subcommands ----------------------------------------------------------------------------------------------

create() {
  local name=$1 serial cert key
  check_name "$name"
  need_base
  lock
  case $(state_of "$name") in
    revoked) die "$name is revoked" 3 ;;
    absent)
      # Leftovers of an issue that crashed before signing would make easy-rsa refuse; no cert was issued.
      rm -f -- "$PKI/reqs/$name.req" "$PKI/private/$name.key" "$PKI/issued/$name.crt"
      easyrsa build-client-full "$name" nopass
      say "issued a certificate for $name (serial $(serial_of "$name" V))" ;;
  esac
  serial=$(serial_of "$name" V)
  cert="$PKI/issued/$name.crt"
  [[ -f $cert ]] || cert="$PKI/certs_by_serial/$serial.pem"
  key="$PKI/private/$name.key"
  [[ -f $cert && -f $key ]] || die "the certificate or key of $name (serial $serial) is missing from $PKI"
  openssl x509 -in "$cert" -out "$workdir/cert.pem"
  [[ $(openssl x509 -in "$workdir/cert.pem" -noout -serial) == "serial=$serial" ]] ||
    die "$cert does not hold serial $serial of the index"
  local not_after
  not_after=$(openssl x509 -in "$workdir/cert.pem" -noout -enddate)
  not_after=$(date -u -d "${not_after#notAfter=}" +%Y-%m-%dT%H:%M:%SZ)
  {
    printf '# serial: %s\n# not-after: %s\n' "$serial" "$not_after"
    printf '<ca>\n'; pem "$PKI/ca.crt"; printf '</ca>\n'
    printf '<cert>\n'; cat "$workdir/cert.pem"; printf '</cert>\n'
    printf '<key>\n'; pem "$key"; printf '</key>\n'
    printf '<tls-crypt>\n'; pem "$BASE/tc.key"; printf '</tls-crypt>\n'
  } >"$workdir/out"
  cat "$workdir/out"  # all or nothing on stdout
}

revoke() {
  local name=$1 outcome
  check_name "$name"
  need_base
  lock
  case $(state_of "$name") in
    absent) echo absent; return 0 ;;
    valid)
      easyrsa revoke "$name"
      say "revoked the certificate of $name (serial $(serial_of "$name" R))"
      outcome=revoked ;;
    revoked)
      say "$name was already revoked in the index (serial $(serial_of "$name" R)); finishing the job"
      outcome="already revoked" ;;
  esac
  install_crl
  kill_sessions "$name"
  echo "$outcome"
}

# The status file is rewritten every second while openvpn runs; an older one is what a stopped server left.
status() {
  local table
  need_base
  if management_open; then
    if table=$(management_command 'status 3'); then
      management_close
      clients_of <<<"$table"
      return 0
    fi
    management_close
  fi
  if [[ -n $(find "$BASE/status.log" -maxdepth 0 -newermt "-$STATUS_FRESH_SECONDS seconds" 2>/dev/null) ]]; then
    clients_of <"$BASE/status.log"
  fi
}

case ${1-} in
  create) (($# == 2)) || usage; create "$2" ;;
  revoke) (($# == 2)) || usage; revoke "$2" ;;
  status) (($# == 1)) || usage; status ;;
  *) usage ;;
esac
