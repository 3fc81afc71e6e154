"""server.brokers package."""
