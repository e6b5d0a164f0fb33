"""Persistence: SQLAlchemy models, the session scope and Alembic migrations (SQLite and PostgreSQL)."""
