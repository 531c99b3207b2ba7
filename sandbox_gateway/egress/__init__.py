"""Egress allow-lists per session: the list syntax and the operator's ceiling (``policy``); the
enforcement point (``proxy``), which ends TLS with the platform's CA (``certs``), reads each
request (``http1``) and resolves names itself (``resolve``); the kernels' DNS (``dns``); the
granted kernels by source address (``grants``); and the process around them, with the control
port on which the gateway sets its grants (``service``, ``__main__``)."""
