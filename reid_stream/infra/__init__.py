"""Local Kafka and Redis for tests and the demo (standard library only)."""
