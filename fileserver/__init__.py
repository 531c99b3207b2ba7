"""Token-authenticated FastAPI file server for the sandbox's shared volume (SPEC §4).

Modules, in dependency order: ``errors`` (the error tree, mapped to JSON responses), ``settings``
(environment), ``paths`` (``confine``, the one gate every endpoint passes a client path through,
and the no-follow directory walk), ``storage`` (fd-relative filesystem operations and the atomic
writer), ``transfer`` (bounded-memory streaming of request and response bodies, multipart
included), ``auth`` (the bearer-token dependency), ``models``, ``routers`` (the endpoints),
``access_log`` (JSON-lines access log) and ``app`` (wiring only).

Run with ``uvicorn fileserver.app:app`` or ``python -m fileserver`` (``mini-sandbox-fileserver``).
"""
