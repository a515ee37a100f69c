"""The portal's SQL, one module per domain: the only place that talks to DuckDB."""
