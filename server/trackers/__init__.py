"""server.trackers package."""
