"""The admin HTTP API: its own port (``config.adminApi``), bearer-token authenticated, never on
one of Envoy's listeners. ``server`` is the app and its auth; each feature adds a module of routes
(``usage``: the chargeback report) to ``server.ROUTE_SETS``."""
