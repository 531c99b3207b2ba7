"""The notebook's server extension: kernel output never runs with the notebook's authority.

``csp``    the Content-Security-Policy of every page (inline scripts by hash only)
``ws``     the websocket bridge to the gateway that drops script-carrying outputs
``files``  /files/, /nbconvert/ and the contents API: images or downloads, never script
``paths``  opening files beneath the root without following a link

``etc/jupyter_notebook_config.py`` (the notebook image's config file) applies them, with the
Host allow-list of ``sandbox_gateway.http.hosts``.
"""
