"""Database schema, migrations and access helpers."""
