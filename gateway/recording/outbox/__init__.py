"""The durable local outbox and its fsync helper."""
