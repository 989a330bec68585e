"""The store: the DuckDB side of telemetryd, run in its own process (the store worker).

Only this package imports duckdb. ``database`` is the database derived from the
journal, ``sandbox`` the read-only query sandbox, ``retention`` the journal's
retention rules and their database side.
"""
