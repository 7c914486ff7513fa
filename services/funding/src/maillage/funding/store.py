"""SQL of the funding service: asyncpg queries on its own database only."""
