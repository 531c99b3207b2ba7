#!/bin/sh
# The egress container's firewall and privileges, set before the egress process starts
# (python -m sandbox_gateway.egress, run from the gateway image).
#
# The egress container joins every kernel network (sandbox_gateway/launchers/docker.py).  From
# the kernel address pool (SANDBOX_KERNEL_SUBNETS) it accepts only
#   * DNS (53, UDP and TCP) and new TCP connections to its listeners (80, 443, 3128 and the
#     ceiling's other ports: nothing else listens), never the control port, and
#   * what belongs to those connections;
# any other UDP (QUIC on 443 among it), ICMP and the control port are refused.  It never opens a
# connection to a kernel address and routes nothing.  Then the process runs as uid 1000 with
# no capability but binding ports below 1024.  Fails closed: without NET_ADMIN (and SETUID,
# SETGID, SETPCAP, CHOWN for the drop) the egress process does not start.
set -eu

pool="${SANDBOX_KERNEL_SUBNETS:-10.213.0.0/16}"
control="${SANDBOX_EGRESS_CONTROL_PORT:-8900}"
state="${SANDBOX_EGRESS_STATE:-/var/lib/sandbox-egress}"
chain=SANDBOX-EGRESS

fail() {
    echo "sandbox egress: $*; refusing to start" >&2
    exit 1
}

iptables -w -N "$chain" 2>/dev/null || iptables -w -F "$chain" || fail "cannot create chain $chain"
iptables -w -A "$chain" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT || fail "conntrack rule"
iptables -w -A "$chain" -p udp --dport 53 -j ACCEPT || fail "dns rule"
iptables -w -A "$chain" -p tcp --dport "$control" -j REJECT --reject-with tcp-reset || fail "control rule"
iptables -w -A "$chain" -p tcp --syn -j ACCEPT || fail "listener rule"
iptables -w -A "$chain" -p tcp -j REJECT --reject-with tcp-reset || fail "tcp reject rule"
iptables -w -A "$chain" -j REJECT --reject-with icmp-port-unreachable || fail "reject rule"
iptables -w -C INPUT -s "$pool" -j "$chain" 2>/dev/null \
    || iptables -w -I INPUT 1 -s "$pool" -j "$chain" || fail "input rule"
iptables -w -C OUTPUT -d "$pool" -m conntrack --ctstate NEW -j REJECT 2>/dev/null \
    || iptables -w -I OUTPUT 1 -d "$pool" -m conntrack --ctstate NEW -j REJECT || fail "output rule"
for direction in -s -d; do
    iptables -w -C FORWARD "$direction" "$pool" -j DROP 2>/dev/null \
        || iptables -w -I FORWARD 1 "$direction" "$pool" -j DROP || fail "forward rule"
done

# The CA's key stays in the state directory, the process's alone; the certificate kernels read
# is written to SANDBOX_EGRESS_PUBLIC_CA.
own() {  # own DIR MODE: once uid 1000 owns it, root here may no longer chmod it (no FOWNER)
    mkdir -p "$1" || fail "cannot create $1"
    [ "$(stat -c %u:%g "$1")" = 1000:100 ] && return 0
    chmod "$2" "$1" && chown 1000:100 "$1" || fail "cannot prepare $1"
}
own "$state" 0700
if [ -n "${SANDBOX_EGRESS_PUBLIC_CA:-}" ]; then
    own "$SANDBOX_EGRESS_PUBLIC_CA" 0755
fi

exec setpriv --reuid=1000 --regid=100 --clear-groups \
    --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
    --bounding-set=-all,+net_bind_service --no-new-privs "$@"
