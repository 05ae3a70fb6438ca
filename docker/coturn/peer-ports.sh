#!/bin/sh
# Keep coturn's relay to Veche's media ports. coturn filters peers by address only: with
# --allowed-peer-ip=VECHE_PUBLIC_IP a relay could reach every UDP port of that address. This
# drops, in the host's network namespace, every UDP packet that leaves a relay port (coturn's
# min-port..max-port) for VECHE_PUBLIC_IP on a port outside Veche's media range(s).
#
#   peer-ports.sh --public-ip ADDR --media-ports MIN:MAX --turn-config turnserver.conf
#   peer-ports.sh --public-ip ADDR --media-ports MIN:MAX --relay-ports MIN:MAX
#   peer-ports.sh --remove
#
# Options may also be written --option=VALUE. --public-ip and --media-ports may be repeated
# (IPv4 and IPv6 addresses; one range per Veche node). What is not given comes from the
# environment: VECHE_PUBLIC_IP (addresses separated by spaces or commas),
# VECHE_MEDIA_PORT_MIN/VECHE_MEDIA_PORT_MAX, TURN_CONFIG or TURN_RELAY_PORT_MIN/MAX.
#
# Idempotent: the rules live in their own chain, VECHE-TURN of the raw table (iptables and
# ip6tables), flushed and rebuilt on every run and jumped to from OUTPUT. The raw table sees a
# packet before Docker's DNAT rewrites a published port's destination. Needs root, or
# CAP_NET_ADMIN in the host's network namespace. The rules do not survive a reboot: run this
# again at boot (the compose service does).
set -eu

CHAIN=VECHE-TURN
addresses=""
media=""
relay=""
config="${TURN_CONFIG:-}"
remove=0

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

fail() {
    echo "peer-ports.sh: $*" >&2
    exit 1
}

# A port range MIN:MAX, both 1..65535 and MIN <= MAX, printed back; anything else fails.
range() {
    case "$1" in
        *[!0-9:]* | :* | *: | *:*:* | "") fail "not a port range MIN:MAX: '$1'" ;;
        *:*) ;;
        *) fail "not a port range MIN:MAX: '$1'" ;;
    esac
    low=${1%:*}
    high=${1#*:}
    if [ "$low" -lt 1 ] || [ "$high" -gt 65535 ] || [ "$low" -gt "$high" ]; then
        fail "not a port range MIN:MAX: '$1'"
    fi
    echo "$low:$high"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --*=*) option=${1%%=*}; value=${1#*=}; shift; set -- "$option" "$value" "$@"; continue ;;
        --public-ip) [ $# -ge 2 ] || usage; addresses="$addresses $2"; shift 2 ;;
        --media-ports) [ $# -ge 2 ] || usage; media="$media $(range "$2")"; shift 2 ;;
        --relay-ports) [ $# -ge 2 ] || usage; relay=$(range "$2"); shift 2 ;;
        --turn-config) [ $# -ge 2 ] || usage; config=$2; shift 2 ;;
        --remove) remove=1; shift ;;
        -h | --help) usage ;;
        *) echo "peer-ports.sh: unknown argument '$1'" >&2; usage ;;
    esac
done

# Remove the chain of one family (iptables or ip6tables); quiet when it is not there.
remove_chain() {
    command -v "$1" >/dev/null 2>&1 || return 0
    while "$1" -w -t raw -D OUTPUT -j "$CHAIN" 2>/dev/null; do :; done
    "$1" -w -t raw -F "$CHAIN" 2>/dev/null || true
    "$1" -w -t raw -X "$CHAIN" 2>/dev/null || true
}

if [ "$remove" = 1 ]; then
    remove_chain iptables
    remove_chain ip6tables
    exit 0
fi

[ -n "$addresses" ] || addresses=$(echo "${VECHE_PUBLIC_IP:-}" | tr ',' ' ')
if [ -z "$media" ] && [ -n "${VECHE_MEDIA_PORT_MIN:-}${VECHE_MEDIA_PORT_MAX:-}" ]; then
    media=$(range "${VECHE_MEDIA_PORT_MIN:-}:${VECHE_MEDIA_PORT_MAX:-}")
fi
if [ -z "$relay" ] && [ -n "$config" ]; then
    [ -r "$config" ] || fail "cannot read $config"
    low=$(sed -n 's/^[[:space:]]*min-port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$config")
    high=$(sed -n 's/^[[:space:]]*max-port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$config")
    relay=$(range "$low:$high")
elif [ -z "$relay" ] && [ -n "${TURN_RELAY_PORT_MIN:-}${TURN_RELAY_PORT_MAX:-}" ]; then
    relay=$(range "${TURN_RELAY_PORT_MIN:-}:${TURN_RELAY_PORT_MAX:-}")
fi
[ -n "$(echo "$addresses" | tr -d ' ')" ] || fail "no address: give --public-ip or VECHE_PUBLIC_IP"
[ -n "$media" ] || fail "no media range: give --media-ports or VECHE_MEDIA_PORT_MIN/MAX"
[ -n "$relay" ] || fail "no relay range: give --relay-ports, --turn-config or TURN_RELAY_PORT_*"

# Flush and rebuild the chain of one family with the rules for its addresses.
build_chain() {
    tool=$1
    shift
    if ! "$tool" -w -t raw -n -L "$CHAIN" >/dev/null 2>&1; then
        "$tool" -w -t raw -N "$CHAIN"
    fi
    "$tool" -w -t raw -F "$CHAIN"
    for address in "$@"; do
        for ports in $media; do
            "$tool" -w -t raw -A "$CHAIN" -p udp -d "$address" --sport "$relay" \
                --dport "$ports" -j RETURN
        done
        "$tool" -w -t raw -A "$CHAIN" -p udp -d "$address" --sport "$relay" -j DROP
    done
    "$tool" -w -t raw -C OUTPUT -j "$CHAIN" 2>/dev/null || "$tool" -w -t raw -I OUTPUT -j "$CHAIN"
}

ipv4=""
ipv6=""
for address in $addresses; do
    case "$address" in
        *:*) ipv6="$ipv6 $address" ;;
        *) ipv4="$ipv4 $address" ;;
    esac
done
# shellcheck disable=SC2086  # the address lists are split on purpose
if [ -n "$ipv4" ]; then build_chain iptables $ipv4; else remove_chain iptables; fi
# shellcheck disable=SC2086
if [ -n "$ipv6" ]; then build_chain ip6tables $ipv6; else remove_chain ip6tables; fi
# shellcheck disable=SC2086
echo "peer-ports.sh: from relay ports $relay, UDP to" $addresses "reaches only ports" $media
