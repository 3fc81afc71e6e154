"""Versioned schema changes of the tracker store's `events` table."""
