"""Jupyter Notebook configuration: every kernel is remote, started by Enterprise Gateway.

The notebook server itself runs no kernel; it forwards kernelspec listing, kernel start and the
kernel websocket to the gateway (jupyter_server's GatewayClient), which starts each kernel in its
own hardened container.  No token locally: compose publishes the port on 127.0.0.1 only, and
the Host allow-list keeps DNS-rebinding pages out.  Settings can be overridden from the
environment (JUPYTER_GATEWAY_URL, NOTEBOOK_TOKEN, SANDBOX_ALLOWED_HOSTS).

Kernel output is hostile (SPEC §5a): see sandbox_notebook/csp.py for the Content-Security-Policy
set here, and sandbox_notebook/ws.py for the output types (JavaScript, Vega) that never reach
the browser.  Kernels write into shared-data/ (the shared volume, inside the root): see
sandbox_notebook/files.py for why no byte of the root is served as something a browser runs, and
no symbolic link there is followed.  Terminals are off, and terminado is not installed.
"""

import os

from sandbox_gateway.http import hosts
from sandbox_notebook import files, ws
from sandbox_notebook.csp import content_security_policy, inline_script_hashes, server_templates

c = get_config()  # type: ignore[name-defined]  # noqa: F821  (injected by traitlets)

c.ServerApp.ip = os.environ.get("NOTEBOOK_IP", "0.0.0.0")
c.ServerApp.port = int(os.environ.get("NOTEBOOK_PORT", "8888"))
c.ServerApp.open_browser = False
c.ServerApp.root_dir = os.environ.get("NOTEBOOK_ROOT_DIR", "/home/jovyan")
c.IdentityProvider.token = os.environ.get("NOTEBOOK_TOKEN", "")
c.PasswordIdentityProvider.hashed_password = ""

c.GatewayClient.url = os.environ.get("JUPYTER_GATEWAY_URL", "http://gateway:8889")
# Left unset, the websocket URL is derived from the HTTP one (an explicit None would break it).
if os.environ.get("JUPYTER_GATEWAY_WS_URL"):
    c.GatewayClient.ws_url = os.environ["JUPYTER_GATEWAY_WS_URL"]
if os.environ.get("JUPYTER_GATEWAY_AUTH_TOKEN"):
    c.GatewayClient.auth_token = os.environ["JUPYTER_GATEWAY_AUTH_TOKEN"]
# A kernel start includes starting its container; leave room for a cold image cache.
c.GatewayClient.connect_timeout = float(os.environ.get("JUPYTER_GATEWAY_CONNECT_TIMEOUT", "60"))
c.GatewayClient.request_timeout = float(os.environ.get("JUPYTER_GATEWAY_REQUEST_TIMEOUT", "60"))

# Chromium refuses the legacy-only kernel websocket of gateway mode; translate instead (see
# sandbox_notebook/ws.py).
c.ServerApp.kernel_websocket_connection_class = (
    "sandbox_notebook.ws.TranslatingGatewayWebSocketConnection"
)
# Messages up to the gateway's bound arrive (tornado's client would close on 10 MiB).
ws.apply()

# DNS rebinding: a request whose Host is not a loopback name (localhost, 127.0.0.1, [::1]), a
# name in SANDBOX_ALLOWED_HOSTS (compose adds "notebook", the chart its Service and ingress
# names; ".example.org" allows its subdomains) or the address the request arrived on gets 421
# (400 when missing or malformed) before routing, websocket upgrades included: the one rule, and
# the one module, of the gateway and the file server (sandbox_gateway/http/hosts.py).
# jupyter_server's own check would not do: bound to 0.0.0.0 it is off by default
# (allow_remote_access), and it runs in JupyterHandler.prepare only, which the "/" redirect and
# the public static files skip.  The peer address is never read, so Docker's port forwarding
# changes nothing.
hosts.apply()

# Kernel output renders as content only (see content_security_policy()).
c.ServerApp.tornado_settings = {
    "headers": {
        "Content-Security-Policy": content_security_policy(inline_script_hashes(server_templates()))
    }
}

# /files/, /nbconvert/ and the contents API: images or downloads, never script; no link followed.
files.apply(c)

# No shell in the notebook container: it sits outside every sandbox.
c.ServerApp.terminals_enabled = False
