# Apply and remove WireGuard peers read from stdin in one `wg set`, then print `wg show IF dump`.
# Usage: bash -c "$(cat hub-peers.sh)" hub-peers INTERFACE < lines
# Lines: "set PUBLIC_KEY PRESHARED_KEY ALLOWED_IPS" or "remove PUBLIC_KEY". Preshared keys never reach a
# command line: they go to wg through 0600 files in a private temporary directory.
set -euo pipefail
interface=$1
key='^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'
networks='^[0-9./,]+$'
umask 077
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
args=()
line=0
while read -r verb public_key preshared_key allowed_ips; do
  line=$((line + 1))
  [[ $public_key =~ $key ]] || { echo "line $line: not a WireGuard public key" >&2; exit 2; }
  case $verb in
    set)
      [[ $preshared_key =~ $key ]] || { echo "line $line: not a preshared key" >&2; exit 2; }
      [[ $allowed_ips =~ $networks ]] || { echo "line $line: bad allowed IPs" >&2; exit 2; }
      printf '%s\n' "$preshared_key" > "$workdir/$line"
      args+=(peer "$public_key" preshared-key "$workdir/$line" allowed-ips "$allowed_ips") ;;
    remove)
      args+=(peer "$public_key" remove) ;;
    *)
      echo "line $line: unknown operation" >&2; exit 2 ;;
  esac
done
if ((${#args[@]})); then
  wg set "$interface" "${args[@]}"
fi
wg show "$interface" dump
