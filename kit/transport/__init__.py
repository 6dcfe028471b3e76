"""Transports: Kafka (confluent-kafka) and, for tests and replay, in-memory."""
