"""server.dialogue package."""
