"""Alembic migrations of the store's schema, run by :func:`ivrkit.store.migrate.upgrade`."""
