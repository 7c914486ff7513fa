"""SQL of the notifications service: asyncpg queries on its own database only."""
