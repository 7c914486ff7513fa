"""SQL of the cordees service: asyncpg queries on its own database only."""
