"""HTTP routers: ``health`` (public) and ``files`` (token required)."""
