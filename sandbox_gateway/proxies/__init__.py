"""Enterprise Gateway process proxies: Docker (``docker``)."""
