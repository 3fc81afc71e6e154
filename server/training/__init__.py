"""server.training package."""
