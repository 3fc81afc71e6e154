"""server.auth package."""
