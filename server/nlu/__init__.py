"""server.nlu package."""
