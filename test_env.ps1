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
function Initialize-Secrets {
    if (-not (Test-Path .env)) { Copy-Item .env.example .env }
    $lines = @(Get-Content .env)
    $current = ($lines | Where-Object { $_ -match '^FILE_SERVER_TOKEN=' } | Select-Object -Last 1)
    $token = if ($current) { $current.Substring('FILE_SERVER_TOKEN='.Length) } else { "" }
    if (-not $token -or $token -eq "local-dev-token") {
        $bytes = New-Object byte[] 32
        [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
        $token = [Convert]::ToBase64String($bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_')
        $lines = @($lines | Where-Object { $_ -notmatch '^FILE_SERVER_TOKEN=' }) + "FILE_SERVER_TOKEN=$token"
        Set-Content -Path .env -Value $lines
        Write-Host "Wrote a new random FILE_SERVER_TOKEN into $(Join-Path $PWD '.env') (keep it private)."
    }
    Write-Host "Secrets: $(Join-Path $PWD '.env') (FILE_SERVER_TOKEN is the file server's bearer token)."
}

function Wait-Healthy {
    param([string] $Name, [string] $Url)
    $timeout = if ($env:STACK_TIMEOUT) { [int] $env:STACK_TIMEOUT } else { 180 }
    $deadline = (Get-Date).AddSeconds($timeout)
    while ($true) {
        try {
            Invoke-WebRequest -Uri $Url -UseBasicParsing -TimeoutSec 3 | Out-Null
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
        Wait-Healthy "gateway" "http://127.0.0.1:$gw/api/kernelspecs"
        Wait-Healthy "notebook" "http://127.0.0.1:$nb/api/status"
        Wait-Healthy "fileserver" "http://127.0.0.1:$fs/health"
    }
}

& $python -m pip install -e ".[dev]"
if ($LASTEXITCODE -ne 0) { throw "pip install failed" }
Write-Host ""
Write-Host "Test environment ready.  Run:  python -m pytest tests/"
