"""Events: the transactional outbox, its relay, the two transports and the consumers.

A service writes its change and its event (outbox.append) in one transaction; the relay
publishes outbox rows to a transport (Kafka, or the PostgreSQL-backed log when no Kafka is
configured); consumers record each event id with their effect, so a redelivered event has
no second effect. model.py holds what all of them share.
"""
