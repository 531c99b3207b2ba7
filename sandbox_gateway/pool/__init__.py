"""The warm pool: the manager (``manager``) and the rules it applies (``rules``)."""
