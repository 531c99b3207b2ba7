"""What a start request may ask for: limits and env checks (``limits``), tenants (``tenants``)."""
