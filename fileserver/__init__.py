"""Token-authenticated FastAPI file server for the sandbox's shared volume (SPEC §4).

Modules, in dependency order: ``errors`` (the error tree, mapped to JSON responses), ``hosts``
(the ``Host`` allow-list middleware against DNS rebinding), ``settings`` (environment), ``paths``
(``confine``/``confine_entry``, the gate every endpoint passes a client path through, and the
no-follow directory walk), ``storage`` (fd-relative filesystem operations and the atomic writer),
``listing`` (directory pages chosen in memory bounded by the page, and their cursors),
``transfer`` (bounded-memory streaming of request and response bodies, multipart included),
``auth`` (the bearer-token dependency), ``models``, ``routers`` (the endpoints), ``access_log``
(JSON-lines access log) and ``app`` (wiring only).

Run with ``uvicorn fileserver.app:app`` or ``python -m fileserver`` (``mini-sandbox-fileserver``).
"""
