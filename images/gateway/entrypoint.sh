#!/bin/sh
# The gateway container's firewall, installed before Enterprise Gateway starts.
#
# Every kernel lives alone on a private network with the gateway (see sandbox_gateway/launchers/docker.py), so the
# gateway is the one neighbour a kernel can address.  Traffic from the kernel address pool
# (SANDBOX_KERNEL_SUBNETS) may only
#   * open a connection to the launch-response port (EG_RESPONSE_PORT), and
#   * answer connections the gateway opened (the kernel's ZMQ ports);
# anything else - the gateway's HTTP/websocket API, any other port, UDP, ICMP - is refused, and
# nothing from or to the pool is routed through this container.  Fails closed: without the
# NET_ADMIN capability (compose adds it to this service only) the gateway does not start.
set -eu

pool="${SANDBOX_KERNEL_SUBNETS:-10.213.0.0/16}"
port="${EG_RESPONSE_PORT:-8877}"
chain=SANDBOX-KERNELS

fail() {
    echo "gateway firewall: $*" >&2
    echo "gateway firewall: the gateway needs the NET_ADMIN capability to contain kernels; refusing to start" >&2
    exit 1
}

iptables -w -N "$chain" 2>/dev/null || iptables -w -F "$chain" || fail "cannot create chain $chain"
iptables -w -A "$chain" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT || fail "conntrack rule"
iptables -w -A "$chain" -p tcp --dport "$port" --syn -j ACCEPT || fail "response port rule"
iptables -w -A "$chain" -p tcp -j REJECT --reject-with tcp-reset || fail "tcp reject rule"
iptables -w -A "$chain" -j REJECT --reject-with icmp-port-unreachable || fail "reject rule"
iptables -w -C INPUT -s "$pool" -j "$chain" 2>/dev/null \
    || iptables -w -I INPUT 1 -s "$pool" -j "$chain" || fail "input rule"
for direction in -s -d; do
    iptables -w -C FORWARD "$direction" "$pool" -j DROP 2>/dev/null \
        || iptables -w -I FORWARD 1 "$direction" "$pool" -j DROP || fail "forward rule"
done

exec "$@"
