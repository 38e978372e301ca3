"""HTTP layer: thin routes, request parsing and the one place errors become HTTP responses."""
