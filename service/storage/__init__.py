"""Storage: SQLAlchemy Core tables, Alembic migrations and the repositories over them."""
