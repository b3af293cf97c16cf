"""The web layer: stock pypiserver's Bottle app, wrapped.

Owns ``build_app``, the pypiserver backend over the in-memory index, the request plugin
(a request's sync before, its bucket write after), the request guards and body limits,
trusted forwarded headers and the request log.

May import: ``gcs_sync.sync``, ``gcs_sync.auth``, ``gcs_sync.drivers`` and the top-level
modules. Never ``ops`` or ``cli``.
"""
