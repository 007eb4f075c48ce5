"""Metadata store: SQLAlchemy models, repositories and Alembic migrations."""
