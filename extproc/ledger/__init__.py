"""The usage ledger: every request's usage record as a database row, for chargeback.

- ``schema``: the columns (the usage record's own field names) and the row of a record;
- ``store``: SQLite (the default) and PostgreSQL, written idempotently by request id;
- ``writer``: the background writer the request path hands rows to (never waits on a database);
- ``runtime``: the process's writer, started by the extproc sidecar;
- ``report``: the chargeback report (totals by identity and model over a period), ``cli``: its
  ``gateway usage`` commands; the admin API serves the same report (extproc/admin/usage.py).
"""
