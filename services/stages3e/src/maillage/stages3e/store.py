"""SQL of the stages3e service: asyncpg queries on its own database only."""
