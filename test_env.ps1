# Set up the test environment (Windows PowerShell): bring the compose stack up (building the
# images from the official Python base), wait until every service answers, and install the
# package with its test dependencies.
#
#   powershell -ExecutionPolicy Bypass -File test_env.ps1      then: python -m pytest tests/
#   $env:SKIP_STACK = "1" to install the Python side only (no Docker needed)
#   ... -File test_env.ps1 -Down            stop the compose stack, then remove the kernel
#                                           containers and kernel networks its gateway started;
#                                           keeps the volumes (notebooks, shared data), .env and
#                                           the images
#   ... -File test_env.ps1 -Down -Volumes   the same, and delete the stack's volumes too
#   ... -File test_env.ps1 -Venv DIR        install into (and run from) the virtual environment
#                                           DIR, created when missing
#
# The interpreter the package goes into: that of -Venv DIR; else, when $env:PYTHON is unset and
# a virtual environment is active, that one ($env:VIRTUAL_ENV); else $env:PYTHON (default
# python) when its pip installs; else the virtual environment .venv here, created on the first
# run.  The script says which before it starts, and how to run the tests from it.
param(
    [switch] $Down,
    [switch] $Volumes,
    [string] $Venv = ""
)
$ErrorActionPreference = "Stop"
# A relative -Venv DIR is where the script was run from, as the user typed it.
if ($Venv -and -not [System.IO.Path]::IsPathRooted($Venv)) { $Venv = Join-Path (Get-Location).Path $Venv }
Set-Location -Path $PSScriptRoot

if ($Volumes -and -not $Down) { throw "-Volumes goes with -Down" }

# Runs the standard-library helpers and creates virtual environments; the package may be
# installed into another interpreter (Resolve-Python).
$basePython = if ($env:PYTHON) { $env:PYTHON } else { "python" }

# A setting as compose sees it: the environment first, then .env, then the default.
function Get-Setting {
    param([string] $Name, [string] $Default)
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ($value) { return $value }
    if (Test-Path .env) {
        $line = Get-Content .env | Where-Object { $_ -match "^$Name=." } | Select-Object -Last 1
        if ($line) { return $line.Substring("$Name=".Length) }
    }
    return $Default
}

# Native commands whose stderr is redirected below run with "Continue": Windows PowerShell turns
# each stderr line into an error record, which "Stop" would make fatal.
function Test-Docker {
    $ErrorActionPreference = "Continue"
    if (-not (Get-Command docker -ErrorAction SilentlyContinue)) { return $false }
    docker info *> $null
    return ($LASTEXITCODE -eq 0)
}

function Invoke-Compose {
    param([Parameter(ValueFromRemainingArguments = $true)] [string[]] $ComposeArgs)
    if (Get-Command docker-compose -ErrorAction SilentlyContinue) {
        & docker-compose @ComposeArgs
    } else {
        & docker compose @ComposeArgs
    }
    if ($LASTEXITCODE -ne 0) { throw "docker compose $ComposeArgs failed" }
}

# Per-install secrets, written into .env once (docker-compose reads it; so do the examples).
# The stack refuses to start without them: a documented default would be public knowledge.
# FILE_SERVER_TOKEN is the file server's; JUPYTER_GATEWAY_AUTH_TOKEN the gateway token of tenant
# "local" (you); NOTEBOOK_GATEWAY_TOKEN that of tenant "notebook"; SANDBOX_EGRESS_CONTROL_TOKEN
# the gateway's for the egress process's control port.  The gateway's tenants file,
# .sandbox/tenants.json, is written from them on every run.
function Initialize-Secrets {
    if (-not (Test-Path .env)) { Copy-Item .env.example .env }
    $tokens = @{}
    foreach ($name in @("FILE_SERVER_TOKEN", "JUPYTER_GATEWAY_AUTH_TOKEN", "NOTEBOOK_GATEWAY_TOKEN",
            "SANDBOX_EGRESS_CONTROL_TOKEN")) {
        $lines = @(Get-Content .env)
        $current = ($lines | Where-Object { $_ -match "^$name=" } | Select-Object -Last 1)
        $token = if ($current) { $current.Substring("$name=".Length) } else { "" }
        if (-not $token -or $token -eq "local-dev-token") {
            $bytes = New-Object byte[] 32
            [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
            $token = [Convert]::ToBase64String($bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_')
            $lines = @($lines | Where-Object { $_ -notmatch "^$name=" }) + "$name=$token"
            Set-Content -Path .env -Value $lines
            Write-Host "Wrote a new random $name into $(Join-Path $PWD '.env') (keep it private)."
        }
        $tokens[$name] = $token
    }
    if (Test-Path .sandbox/tenants.json -PathType Container) { Remove-Item .sandbox/tenants.json }
    New-Item -ItemType Directory -Force -Path .sandbox | Out-Null
    $tenants = @{ tenants = @{
        local = @{ token = $tokens["JUPYTER_GATEWAY_AUTH_TOKEN"]; metrics = $true }
        notebook = @{ token = $tokens["NOTEBOOK_GATEWAY_TOKEN"] }
    } }
    $tenants | ConvertTo-Json -Depth 4 | Set-Content -Path .sandbox/tenants.json
    Write-Host "Secrets: $(Join-Path $PWD '.env') (gateway and file server tokens) and .sandbox/tenants.json."
}

function Wait-Healthy {
    param([string] $Name, [string] $Url, [string] $Token = "")
    $timeout = if ($env:STACK_TIMEOUT) { [int] $env:STACK_TIMEOUT } else { 180 }
    $deadline = (Get-Date).AddSeconds($timeout)
    while ($true) {
        try {
            $headers = if ($Token) { @{ Authorization = "token $Token" } } else { @{} }
            Invoke-WebRequest -Uri $Url -Headers $headers -UseBasicParsing -TimeoutSec 3 | Out-Null
            Write-Host "$Name is up at $Url"
            return
        } catch {
            if ((Get-Date) -gt $deadline) {
                throw "$Name did not become healthy at $Url; see: docker-compose logs $Name"
            }
            Start-Sleep -Seconds 1
        }
    }
}

# Why "<python> -m pip install" would be refused (an externally managed Python, no pip,
# PIP_REQUIRE_VIRTUALENV, ...); empty when it works.  Installing the pip that is already there
# changes nothing.
function Get-PipRefusal {
    param([string] $Python)
    $ErrorActionPreference = "Continue"
    $out = & $Python -m pip install --no-index --no-deps --disable-pip-version-check pip 2>&1
    if ($LASTEXITCODE -eq 0) { return "" }
    if ("$out" -match "externally-managed-environment") { return "it is externally managed (PEP 668)" }
    $first = $out | Where-Object { "$_" -match "error|no module" } | Select-Object -First 1
    if ($first) { return "$first" } else { return "pip install failed" }
}

function Get-VenvPython {
    param([string] $Dir)
    # Windows PowerShell ("Desktop") runs on Windows only, and has no $IsWindows.
    if ($PSVersionTable.PSEdition -eq "Desktop" -or $IsWindows) { return (Join-Path $Dir "Scripts/python.exe") }
    return (Join-Path $Dir "bin/python")
}

# The interpreter the package is installed into, why that one, and the virtual environment
# chosen here (if one is; New-VenvIfMissing creates it).
function Resolve-Python {
    if (-not (Get-Command $basePython -ErrorAction SilentlyContinue)) {
        throw "no $basePython here (set `$env:PYTHON to an interpreter)"
    }
    if ($Venv) {
        return @{ Python = (Get-VenvPython $Venv); Venv = $Venv; Note = "virtual environment $Venv, from -Venv" }
    }
    if (-not $env:PYTHON -and $env:VIRTUAL_ENV) {
        $python = Get-VenvPython $env:VIRTUAL_ENV
        if (-not (Test-Path $python)) { throw "VIRTUAL_ENV=$($env:VIRTUAL_ENV) has no python" }
        return @{ Python = $python; Venv = ""; Note = "the active virtual environment, `$env:VIRTUAL_ENV" }
    }
    $refused = Get-PipRefusal $basePython
    if (-not $refused) {
        return @{ Python = $basePython; Venv = ""; Note = "$basePython, whose pip installs" }
    }
    return @{ Python = (Get-VenvPython ".venv"); Venv = ".venv"
        Note = "virtual environment .venv, because $basePython refuses pip: $refused" }
}

function New-VenvIfMissing {
    param([hashtable] $Choice)
    if (-not $Choice.Venv) { return }
    if (-not (Test-Path $Choice.Python)) {
        & $basePython -m venv $Choice.Venv
        if ($LASTEXITCODE -ne 0) { throw "cannot create the virtual environment $($Choice.Venv)" }
        Write-Host "Created the virtual environment $($Choice.Venv)."
    }
    $ErrorActionPreference = "Continue"
    & $Choice.Python -m pip --version *> $null
    if ($LASTEXITCODE -ne 0) { throw "$($Choice.Venv) has no pip: remove it and run this again" }
}

# Compose with placeholders for the required secrets (${NAME:?...} in docker-compose.yaml) that
# are unset, as they are without .env: compose refuses to read the file without them, and
# `down` and `ps` use none of them.  Never used to start anything.
function Invoke-ComposeWithoutSecrets {
    param([Parameter(ValueFromRemainingArguments = $true)] [string[]] $ComposeArgs)
    $names = Select-String -Path docker-compose.yaml -Pattern '\$\{([A-Za-z_][A-Za-z0-9_]*):\?' -AllMatches |
        ForEach-Object { $_.Matches } | ForEach-Object { $_.Groups[1].Value } | Sort-Object -Unique
    $set = @()
    foreach ($name in $names) {
        if (-not (Get-Setting $name "")) {
            [Environment]::SetEnvironmentVariable($name, "unused-by-down")
            $set += $name
        }
    }
    try { Invoke-Compose @ComposeArgs }
    finally { foreach ($name in $set) { [Environment]::SetEnvironmentVariable($name, $null) } }
}

# Stops the compose stack, then removes what its gateway started beside it, which compose does
# not know of: the kernel containers (the warm pool's too) and their private networks, labelled
# mini-jupyter-sandbox.deployment=<compose project> and component=kernel / kernel-network
# (sandbox_gateway/launchers/docker.py).
function Stop-Stack {
    if (-not (Test-Docker)) { throw "no Docker engine reachable: nothing to stop" }
    $project = (Get-Setting "COMPOSE_PROJECT_NAME" (Split-Path -Leaf $PWD.Path)).ToLower() -replace '[^a-z0-9_-]', ''
    $project = $project.TrimStart('-', '_')
    # The gateway labels its kernels with its compose project: ask the gateway container while
    # it is there; after a plain `docker-compose down` it is not.
    $deployment = ""
    try {
        $ErrorActionPreference = "Continue"
        $gateway = (Invoke-ComposeWithoutSecrets ps -q gateway 2> $null | Select-Object -First 1)
        if ($gateway) {
            $deployment = docker inspect -f '{{ index .Config.Labels "com.docker.compose.project" }}' $gateway 2> $null
        }
    } catch {
        $deployment = ""
    } finally {
        $ErrorActionPreference = "Stop"
    }
    if (-not $deployment) { $deployment = $project }
    $shared = Get-Setting "SANDBOX_SHARED_VOLUME" "mini-jupyter-sandbox-shared"
    $named = @("$shared (shared data: the kernels' /data/shared, the file server's root)",
        "$($project)_notebook-home (the notebooks: the notebook server's home)",
        "$($project)_gateway-sessions (the gateway's kernel sessions)")

    Write-Host "Stopping the compose stack (project $project)."
    Invoke-ComposeWithoutSecrets down --remove-orphans
    $filter = "label=mini-jupyter-sandbox.deployment=$deployment"
    $ids = @(docker ps -aq --filter $filter --filter label=component=kernel)
    if ($ids.Count) {
        docker rm -f @ids | Out-Null
        Write-Host "Removed $($ids.Count) kernel container(s) of deployment $deployment."
    }
    $ids = @(docker network ls -q --filter $filter --filter label=component=kernel-network)
    if ($ids.Count) {
        docker network rm @ids | Out-Null
        Write-Host "Removed $($ids.Count) kernel network(s) of deployment $deployment."
    }
    if ($Volumes) {
        Write-Warning ("deleting the stack's volumes and every file in them: " + ($named -join "; "))
        # Only now, with no kernel container left holding the shared volume, can compose
        # remove it.
        Invoke-ComposeWithoutSecrets down --volumes --remove-orphans
        Write-Host "Stack stopped, volumes deleted.  Kept: .env, .sandbox/ and the images."
    } else {
        Write-Host "Stack stopped.  Kept the volumes (test_env.ps1 -Down -Volumes deletes them):"
        $named | ForEach-Object { Write-Host "  $_" }
    }
}

if ($Down) {
    Stop-Stack
    exit 0
}

$choice = Resolve-Python
$dockerOk = ($env:SKIP_STACK -ne "1") -and (Test-Docker)

# One line per thing this run installs or starts, before it starts.
Write-Host "test_env.ps1 will:"
if ($env:SKIP_STACK -ne "1") {
    if ($dockerOk) {
        Write-Host ("  images:   build mini-jupyter-sandbox/{kernel-python,gateway,notebook,fileserver}:" +
            (Get-Setting "SANDBOX_VERSION" "0.1.0") + " (docker compose up --build)")
        Write-Host ("  stack:    write the secrets into .env, then docker compose up -d: notebook :" +
            (Get-Setting "NOTEBOOK_PORT" "8888") + ", gateway :" + (Get-Setting "GATEWAY_PORT" "8889") +
            ", file server :" + (Get-Setting "FILE_SERVER_PORT" "8080") + " (stop it: test_env.ps1 -Down)")
    } else {
        Write-Host "  images:   none: no Docker engine reachable (the Docker tests will skip)"
        Write-Host "  stack:    none: no Docker engine reachable"
    }
}
Write-Host "  python:   pip install -e "".[dev]"" into $($choice.Python) ($($choice.Note))"
$chromium = if ($env:SANDBOX_CHROMIUM) { $env:SANDBOX_CHROMIUM } else { "/usr/bin/chromium" }
Write-Host "  chromium: not installed by this script; the browser tests use $chromium (set SANDBOX_CHROMIUM), else they skip"
Write-Host ""
New-VenvIfMissing $choice

if ($env:SKIP_STACK -ne "1") {
    if (-not $dockerOk) {
        Write-Warning ("No Docker engine reachable: the stack cannot start here, and the Docker " +
            "tests will skip. Start Docker Desktop and run this again for the full suite.")
    } else {
        Initialize-Secrets
        Invoke-Compose up -d --build
        $gw = Get-Setting "GATEWAY_PORT" "8889"
        $nb = Get-Setting "NOTEBOOK_PORT" "8888"
        $fs = Get-Setting "FILE_SERVER_PORT" "8080"
        $localToken = ((Get-Content .env | Where-Object { $_ -match '^JUPYTER_GATEWAY_AUTH_TOKEN=' } |
            Select-Object -Last 1) -replace '^JUPYTER_GATEWAY_AUTH_TOKEN=', '')
        Wait-Healthy "gateway" "http://127.0.0.1:$gw/api/kernelspecs" $localToken
        Wait-Healthy "notebook" "http://127.0.0.1:$nb/api/status"
        Wait-Healthy "fileserver" "http://127.0.0.1:$fs/health"
    }
}

& $choice.Python -m pip install -e ".[dev]"
if ($LASTEXITCODE -ne 0) { throw "pip install failed" }
Write-Host ""
if ($choice.Venv) {
    $activate = Join-Path (Split-Path -Parent $choice.Python) "Activate.ps1"
    Write-Host "Test environment ready, in the virtual environment $($choice.Venv).  Run:"
    Write-Host "  $activate"
    Write-Host "  python -m pytest tests/"
    Write-Host "(or, without activating it:  $($choice.Python) -m pytest tests/)"
} else {
    Write-Host "Test environment ready.  Run:  python -m pytest tests/"
}
