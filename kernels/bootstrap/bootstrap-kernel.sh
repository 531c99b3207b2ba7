#!/bin/sh
# Entry point of the kernel image: start gateway_provisioners' Python kernel launcher, which
# creates the kernel's ports, sends the encrypted connection info to the gateway's response
# address and runs ipykernel.  Unlike the stock bootstrap it never prints the environment (the
# container log would otherwise carry PUBLIC_KEY and whatever the client passed) and it execs, so
# the kernel receives signals from docker-init directly and its death ends the container.
set -eu

: "${KERNEL_ID:?KERNEL_ID is required}"
: "${RESPONSE_ADDRESS:?RESPONSE_ADDRESS is required}"
: "${PUBLIC_KEY:?PUBLIC_KEY is required}"

set -- --kernel-id "$KERNEL_ID" \
    --port-range "${PORT_RANGE:-0..0}" \
    --response-address "$RESPONSE_ADDRESS" \
    --public-key "$PUBLIC_KEY" \
    --spark-context-initialization-mode none
if [ -n "${KERNEL_CLASS_NAME:-}" ]; then
    set -- "$@" --kernel-class-name "$KERNEL_CLASS_NAME"
fi
if [ -n "${TRANSPORT_ENCRYPTION:-}" ]; then
    set -- "$@" --transport-encryption "$TRANSPORT_ENCRYPTION"
fi

# The client's working directory, when it exists here (as the gateway's warm pool does it).
if [ -n "${KERNEL_WORKING_DIR:-}" ] && [ -d "$KERNEL_WORKING_DIR" ]; then
    cd "$KERNEL_WORKING_DIR"
fi

# ipykernel exits when the process named by JPY_PARENT_PID is no longer its parent.  After exec
# the kernel's parent is docker-init, and the container's lifetime already bounds the kernel's.
unset JPY_PARENT_PID
exec python "${KERNEL_LAUNCHERS_DIR:-/usr/local/bin/kernel-launchers}/python/scripts/launch_ipykernel.py" "$@"
