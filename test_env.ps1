# Set up the test environment (Windows PowerShell): bring the compose stack up (building the
# images from the official Python base), wait until every service answers, and install the
# package with its test dependencies.
#
#   powershell -ExecutionPolicy Bypass -File test_env.ps1      then: python -m pytest tests/
#   $env:SKIP_STACK = "1" to install the Python side only (no Docker needed)
$ErrorActionPreference = "Stop"
Set-Location -Path $PSScriptRoot

$python = if ($env:PYTHON) { $env:PYTHON } else { "python" }

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
# "local" (you); NOTEBOOK_GATEWAY_TOKEN that of tenant "notebook".  The gateway's tenants file,
# .sandbox/tenants.json, is written from them on every run.
function Initialize-Secrets {
    if (-not (Test-Path .env)) { Copy-Item .env.example .env }
    $tokens = @{}
    foreach ($name in @("FILE_SERVER_TOKEN", "JUPYTER_GATEWAY_AUTH_TOKEN", "NOTEBOOK_GATEWAY_TOKEN")) {
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

if ($env:SKIP_STACK -ne "1") {
    $dockerOk = $false
    if (Get-Command docker -ErrorAction SilentlyContinue) {
        docker info *> $null
        $dockerOk = ($LASTEXITCODE -eq 0)
    }
    if (-not $dockerOk) {
        Write-Warning ("No Docker engine reachable: the stack cannot start here, and the Docker " +
            "tests will skip. Start Docker Desktop and run this again for the full suite.")
    } else {
        Initialize-Secrets
        Invoke-Compose up -d --build
        $gw = if ($env:GATEWAY_PORT) { $env:GATEWAY_PORT } else { "8889" }
        $nb = if ($env:NOTEBOOK_PORT) { $env:NOTEBOOK_PORT } else { "8888" }
        $fs = if ($env:FILE_SERVER_PORT) { $env:FILE_SERVER_PORT } else { "8080" }
        $localToken = ((Get-Content .env | Where-Object { $_ -match '^JUPYTER_GATEWAY_AUTH_TOKEN=' } |
            Select-Object -Last 1) -replace '^JUPYTER_GATEWAY_AUTH_TOKEN=', '')
        Wait-Healthy "gateway" "http://127.0.0.1:$gw/api/kernelspecs" $localToken
        Wait-Healthy "notebook" "http://127.0.0.1:$nb/api/status"
        Wait-Healthy "fileserver" "http://127.0.0.1:$fs/health"
    }
}

& $python -m pip install -e ".[dev]"
if ($LASTEXITCODE -ne 0) { throw "pip install failed" }
Write-Host ""
Write-Host "Test environment ready.  Run:  python -m pytest tests/"
