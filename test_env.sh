#!/usr/bin/env bash
# Set up the test environment (Linux/macOS): build the images, bring the compose stack up, wait
# until every service answers, and install the package with its test dependencies.
#
#   ./test_env.sh              then: python -m pytest tests/
#   SKIP_STACK=1 ./test_env.sh installs the Python side only (no Docker needed)
#   ./test_env.sh --local      no Docker at all: gateway :8889 and file server :8080 with kernels
#                              as plain local processes, for trying the API — NOT ISOLATED
#   ./test_env.sh --secrets    only write the per-install secrets into .env (done by every run)
#   ./test_env.sh --kubernetes all of the above, then a single-node Kubernetes cluster on this
#                              machine (root, Linux; binaries built from Go modules on the first
#                              run) with the chart installed by helm; prints, last, the exports
#                              (KUBECONFIG, GATEWAY_HTTP, ...): eval "$(./test_env.sh --kubernetes)"
#   ./test_env.sh --kubernetes down   stops that cluster and removes its state
#   ./test_env.sh --down       stops the compose stack, then removes the kernel containers and
#                              kernel networks its gateway started; keeps the volumes (notebooks,
#                              shared data), .env and the images
#   ./test_env.sh --down --volumes    the same, and deletes the stack's volumes too
#   --venv DIR                 install into (and run from) the virtual environment DIR, created
#                              when missing
#
# The interpreter the package goes into: that of DIR with --venv; else, when $PYTHON is unset and
# a virtual environment is active, that one ($VIRTUAL_ENV); else $PYTHON (default python3) when
# its pip installs; else, where that Python refuses pip (PEP 668 "externally-managed-environment",
# e.g. Debian 12, Ubuntu 23.04+, Homebrew), the virtual environment .venv here, created on the
# first run.  The script says which before it starts, and how to run the tests from it.
set -euo pipefail
invoked_from="$PWD"
cd "$(dirname "$0")"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d; s/^# \{0,1\}//; p;}' "$(basename "$0")"
}

die() {
    echo "test_env.sh: $*" >&2
    exit 1
}

mode=stack
volumes=0
venv_dir=""
set_mode() {
    [[ "$mode" == stack || "$mode" == "$1" ]] || die "choose one of --local, --secrets, --kubernetes, --down"
    mode="$1"
}
while (($#)); do
    case "$1" in
        --local) set_mode local ;;
        --secrets) set_mode secrets ;;
        --kubernetes)
            if [[ "${2:-}" == down ]]; then
                set_mode kubernetes-down
                shift
            else
                set_mode kubernetes
            fi
            ;;
        --down) set_mode down ;;
        --volumes) volumes=1 ;;
        --venv)
            [[ $# -ge 2 && -n "$2" ]] || die "--venv needs a directory"
            venv_dir="$2"
            shift
            ;;
        --venv=*) venv_dir="${1#--venv=}" ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
    shift
done
((volumes == 0)) || [[ "$mode" == down ]] || die "--volumes goes with --down"
# A relative DIR is where the script was run from, as the user typed it.
[[ -z "$venv_dir" || "$venv_dir" == /* ]] || venv_dir="$invoked_from/$venv_dir"
[[ "$mode" == local ]] && SKIP_STACK=1
if [[ "$mode" == kubernetes ]]; then
    # Only the exports reach stdout (fd 3); every step's progress goes to stderr.
    exec 3>&1 1>&2
fi

# Runs the standard-library helpers below and creates virtual environments; the package may be
# installed into another interpreter (resolve_python).
base_python="${PYTHON:-python3}"

compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        docker-compose "$@"
    else
        docker compose "$@"
    fi
}

# A setting as compose sees it: the environment first, then .env, then the default.
setting() {  # setting NAME DEFAULT
    if [[ -n "${!1:-}" ]]; then
        printf '%s\n' "${!1}"
    elif [[ -f .env ]] && grep -q "^$1=." .env; then
        sed -n "s/^$1=//p" .env | tail -n 1
    else
        printf '%s\n' "$2"
    fi
}

docker_reachable() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# Per-install secrets, written into .env once (docker-compose reads it; so do the examples).
# The stack refuses to start without them: a documented default would be public knowledge.
#   FILE_SERVER_TOKEN           the file server's bearer token
#   JUPYTER_GATEWAY_AUTH_TOKEN  the gateway token of tenant "local" (you: the client, examples,
#                               /metrics); the client reads this variable by default
#   NOTEBOOK_GATEWAY_TOKEN      the gateway token of tenant "notebook" (the notebook server)
#   SANDBOX_EGRESS_CONTROL_TOKEN  the gateway's token for the egress process's control port
# The gateway's tenants file, .sandbox/tenants.json, is written from them on every run.
ensure_secrets() {
    [[ -f .env ]] || cp .env.example .env
    chmod 600 .env
    local name token
    for name in FILE_SERVER_TOKEN JUPYTER_GATEWAY_AUTH_TOKEN NOTEBOOK_GATEWAY_TOKEN \
        SANDBOX_EGRESS_CONTROL_TOKEN; do
        token="$(sed -n "s/^$name=//p" .env | tail -n 1)"
        if [[ -z "$token" || "$token" == local-dev-token ]]; then
            token="$("$base_python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
            sed -i.bak "/^$name=/d" .env && rm -f .env.bak
            echo "$name=$token" >>.env
            echo "Wrote a new random $name into $(pwd)/.env (keep it private)."
        fi
    done
    # A bind mount of a missing file leaves a directory in its place: replace it.
    [[ -d .sandbox/tenants.json ]] && rmdir .sandbox/tenants.json
    mkdir -p .sandbox && chmod 700 .sandbox
    (umask 077 && "$base_python" - .env .sandbox/tenants.json <<'PY'
import json, sys
env = dict(
    line.split("=", 1) for line in open(sys.argv[1]).read().splitlines() if "=" in line
    and not line.lstrip().startswith("#")
)
tenants = {
    "local": {"token": env["JUPYTER_GATEWAY_AUTH_TOKEN"], "metrics": True},
    "notebook": {"token": env["NOTEBOOK_GATEWAY_TOKEN"]},
}
with open(sys.argv[2], "w") as f:
    json.dump({"tenants": tenants}, f, indent=2)
PY
    )
    echo "Secrets: $(pwd)/.env (gateway and file server tokens) and .sandbox/tenants.json."
}

wait_for() {  # wait_for NAME URL [TOKEN]
    local deadline=$((SECONDS + ${STACK_TIMEOUT:-180}))
    until "$base_python" -c "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={'Authorization': 'token ' + sys.argv[2]} if sys.argv[2] else {}), timeout=3)" "$2" "${3:-}" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            echo "$1 did not become healthy at $2; see: docker-compose logs $1" >&2
            return 1
        fi
        sleep 1
    done
    echo "$1 is up at $2"
}

# Why "$1 -m pip install" would be refused here (PEP 668's externally-managed-environment, no
# pip, PIP_REQUIRE_VIRTUALENV, ...); empty when it works.  Asking pip itself honours what can
# lift the refusal (PIP_BREAK_SYSTEM_PACKAGES, pip.conf), which the marker file alone does not
# show; installing the pip that is already there changes nothing.
pip_refusal() {
    local out
    if out="$("$1" -m pip install --no-index --no-deps --disable-pip-version-check pip 2>&1)"; then
        return 0
    fi
    if grep -q externally-managed-environment <<<"$out"; then
        echo "it is externally managed (PEP 668)"
    else
        grep -m 1 -iE 'error|no module' <<<"$out" || echo "pip install failed"
    fi
}

# Sets python (the interpreter the package is installed into), python_note (why that one) and
# venv (the virtual environment chosen here, if one is; make_venv creates it).
python=""
python_note=""
venv=""
resolve_python() {
    local refused
    command -v "$base_python" >/dev/null 2>&1 || die "no $base_python here (set PYTHON to an interpreter)"
    if [[ -n "$venv_dir" ]]; then
        venv="$venv_dir"
        python_note="virtual environment $venv_dir, from --venv"
    elif [[ -z "${PYTHON:-}" && -n "${VIRTUAL_ENV:-}" ]]; then
        [[ -x "$VIRTUAL_ENV/bin/python" ]] || die "VIRTUAL_ENV=$VIRTUAL_ENV has no bin/python"
        python="$VIRTUAL_ENV/bin/python"
        python_note="the active virtual environment, \$VIRTUAL_ENV"
        return
    elif refused="$(pip_refusal "$base_python")" && [[ -z "$refused" ]]; then
        python="$(command -v "$base_python")"
        python_note="$base_python, whose pip installs"
        return
    else
        venv=.venv
        python_note="virtual environment .venv, because $base_python refuses pip: $refused"
    fi
    python="$venv/bin/python"
    [[ -x "$python" ]] || python_note="$python_note; created now with $base_python"
}

make_venv() {
    [[ -n "$venv" ]] || return 0
    if [[ ! -x "$python" ]]; then
        "$base_python" -m venv "$venv" \
            || die "cannot create $venv (Debian/Ubuntu: apt-get install python3-venv; then remove $venv and run this again)"
        echo "Created the virtual environment $venv."
    fi
    "$python" -m pip --version >/dev/null 2>&1 \
        || die "$venv has no pip (Debian/Ubuntu: apt-get install python3-venv; then remove $venv and run this again)"
}

# Whether the "python" on PATH is the interpreter the package went into.
python_on_path_is() {
    local here
    here="$(python -c 'import sys; print(sys.prefix)' 2>/dev/null)" || return 1
    [[ "$here" == "$("$1" -c 'import sys; print(sys.prefix)')" ]]
}

# Names of the stack's volumes, as compose names them.
project_name() {
    local name
    name="$(setting COMPOSE_PROJECT_NAME "$(basename "$PWD")")"
    name="$(printf '%s' "$name" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9_-')"
    while [[ "$name" == [-_]* ]]; do name="${name:1}"; done
    printf '%s\n' "$name"
}

# Compose with placeholders for the required secrets (${NAME:?...} in docker-compose.yaml) that
# are unset, as they are without .env: compose refuses to read the file without them, and
# `down` and `ps` use none of them.  Never used to start anything.
compose_without_secrets() {
    local dummies=() name
    # shellcheck disable=SC2016  # a literal ${ to match
    while read -r name; do
        [[ -n "$(setting "$name" "")" ]] || dummies+=("$name=unused-by-down")
    done < <(grep -o '\${[A-Za-z_][A-Za-z0-9_]*:?' docker-compose.yaml | sed 's/^\${//; s/:?$//' | sort -u)
    (
        if ((${#dummies[@]})); then export "${dummies[@]}"; fi
        compose "$@"
    )
}

# Stops the compose stack, then removes what its gateway started beside it, which compose does
# not know of: the kernel containers (the warm pool's too) and their private networks, labelled
# mini-jupyter-sandbox.deployment=<compose project> and component=kernel / kernel-network
# (sandbox_gateway/launchers/docker.py, the sweep in sandbox_gateway/proxies/docker.py).
stack_down() {
    docker_reachable || die "no Docker engine reachable: nothing to stop"
    local project deployment="" gateway shared
    project="$(project_name)"
    # The gateway labels its kernels with its compose project: ask the gateway container while
    # it is there; after a plain `docker-compose down` it is not.
    gateway="$(compose_without_secrets ps -q gateway 2>/dev/null | head -n 1)" || gateway=""
    if [[ -n "$gateway" ]]; then
        deployment="$(docker inspect -f '{{ index .Config.Labels "com.docker.compose.project" }}' "$gateway" 2>/dev/null)" || deployment=""
    fi
    deployment="${deployment:-$project}"
    shared="$(setting SANDBOX_SHARED_VOLUME mini-jupyter-sandbox-shared)"
    local named=("$shared (shared data: the kernels' /data/shared, the file server's root)"
        "${project}_notebook-home (the notebooks: the notebook server's home)"
        "${project}_gateway-sessions (the gateway's kernel sessions)")

    echo "Stopping the compose stack (project $project)."
    compose_without_secrets down --remove-orphans

    local filter="label=mini-jupyter-sandbox.deployment=$deployment" ids
    # shellcheck disable=SC2207  # ids: one word each
    ids=($(docker ps -aq --filter "$filter" --filter label=component=kernel))
    if ((${#ids[@]})); then
        docker rm -f "${ids[@]}" >/dev/null
        echo "Removed ${#ids[@]} kernel container(s) of deployment $deployment."
    fi
    # shellcheck disable=SC2207
    ids=($(docker network ls -q --filter "$filter" --filter label=component=kernel-network))
    if ((${#ids[@]})); then
        docker network rm "${ids[@]}" >/dev/null
        echo "Removed ${#ids[@]} kernel network(s) of deployment $deployment."
    fi

    if ((volumes)); then
        echo "WARNING: deleting the stack's volumes and every file in them:" >&2
        printf '  %s\n' "${named[@]}" >&2
        # Only now, with no kernel container left holding the shared volume, can compose
        # remove it.
        compose_without_secrets down --volumes --remove-orphans
        echo "Stack stopped, volumes deleted.  Kept: .env, .sandbox/ and the images."
    else
        echo "Stack stopped.  Kept the volumes (./test_env.sh --down --volumes deletes them):"
        printf '  %s\n' "${named[@]}"
    fi
}

# One line per thing this run installs or starts, before it starts.
say_plan() {  # say_plan DOCKER(yes|no)
    local version chromium
    version="$(setting SANDBOX_VERSION 0.1.0)"
    echo "./test_env.sh will:"
    if [[ "$mode" == stack || "$mode" == kubernetes ]] && [[ "${SKIP_STACK:-0}" != 1 ]]; then
        if [[ "$1" == yes ]]; then
            echo "  images:   build mini-jupyter-sandbox/{kernel-python,gateway,notebook,fileserver,controller}:$version (images/build.sh; seconds when current)"
            echo "  stack:    write the secrets into .env, then docker-compose up -d: notebook :$(setting NOTEBOOK_PORT 8888), gateway :$(setting GATEWAY_PORT 8889), file server :$(setting FILE_SERVER_PORT 8080) on $(setting SANDBOX_BIND_ADDRESS 127.0.0.1) (stop it: ./test_env.sh --down)"
        else
            echo "  images:   none: no Docker engine reachable (the Docker tests will skip)"
            echo "  stack:    none: no Docker engine reachable"
        fi
    fi
    echo "  python:   pip install -e \".[dev]\" into $python ($python_note)"
    chromium="${SANDBOX_CHROMIUM:-/usr/bin/chromium}"
    if command -v "$chromium" >/dev/null 2>&1; then
        echo "  chromium: not installed by this script; the browser tests use $chromium"
    else
        echo "  chromium: not installed by this script, and $chromium is missing: the browser tests skip (install chromium or set SANDBOX_CHROMIUM)"
    fi
    if [[ "$mode" == local ]]; then
        echo "  run:      the local stack (python -m testkit.local_stack) in the foreground"
    elif [[ "$mode" == kubernetes ]]; then
        echo "  cluster:  a single-node Kubernetes cluster (python -m testkit.cluster up) with the chart installed"
    fi
    echo
}

case "$mode" in
    secrets)
        ensure_secrets
        exit 0
        ;;
    down)
        stack_down
        exit 0
        ;;
    kubernetes-down)
        # The interpreter `--kubernetes` ran it with (it needs PyYAML).
        resolve_python
        [[ -x "$python" ]] || python="$base_python"
        exec "$python" -m testkit.cluster down
        ;;
esac

resolve_python
docker=no
if [[ "${SKIP_STACK:-0}" != 1 ]] && docker_reachable; then
    docker=yes
fi
say_plan "$docker"
make_venv

if [[ "${SKIP_STACK:-0}" != 1 ]]; then
    if [[ "$docker" != yes ]]; then
        echo "No Docker engine reachable: the stack cannot start here, and the Docker tests will" >&2
        echo "skip.  Start dockerd (or Docker Desktop) and run this again for the full suite." >&2
        echo "To try the API without isolation meanwhile: ./test_env.sh --local" >&2
    else
        # Builds with the official base where a registry is reachable, else with the offline
        # base (debootstrap); a no-op in seconds when the images are current.  The version of
        # .env too: compose tags the stack's images with it.
        SANDBOX_VERSION="$(setting SANDBOX_VERSION 0.1.0)" images/build.sh
        ensure_secrets
        compose up -d
        wait_for gateway "http://127.0.0.1:$(setting GATEWAY_PORT 8889)/api/kernelspecs" \
            "$(sed -n 's/^JUPYTER_GATEWAY_AUTH_TOKEN=//p' .env | tail -n 1)"
        wait_for notebook "http://127.0.0.1:$(setting NOTEBOOK_PORT 8888)/api/status" \
            "$(setting NOTEBOOK_TOKEN "")"
        wait_for fileserver "http://127.0.0.1:$(setting FILE_SERVER_PORT 8080)/health"
    fi
fi

"$python" -m pip install -e ".[dev]"
if [[ "$mode" == local ]]; then
    exec "$python" -m testkit.local_stack
fi
if [[ "$mode" == kubernetes ]]; then
    # The images were built above; the cluster imports them. Progress goes to stderr, the
    # exports to stdout, last.
    echo "Starting the Kubernetes cluster (the first run builds its binaries: ~20 minutes)." >&2
    exec "$python" -m testkit.cluster up >&3
fi
echo
if [[ -n "$venv" ]]; then
    echo "Test environment ready, in the virtual environment $venv.  Run:"
    echo "  source $venv/bin/activate"
    echo "  python -m pytest tests/"
    echo "(or, without activating it:  $venv/bin/python -m pytest tests/)"
elif python_on_path_is "$python"; then
    echo "Test environment ready.  Run:  python -m pytest tests/"
else
    echo "Test environment ready.  Run:  $python -m pytest tests/"
fi
