"""server.channels package."""
