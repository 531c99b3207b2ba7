"""HTTP hardening: the Host allow-list (``hosts``), bounded kernel messages (``messages``), and
fixes to Enterprise Gateway (``patches``); and ``status``, the route ``mini-sandbox status``
reads."""
