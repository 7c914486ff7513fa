"""SQL of the registry service: asyncpg queries on its own database only."""
