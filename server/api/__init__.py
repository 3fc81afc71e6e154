"""server.api package."""
