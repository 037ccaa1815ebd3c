"""The audit log: every domain event of a tenant, kept as its "complete transaction history".

Not a gRPC service: a consumer group ("audit", consumer.py) writes it from the event bus,
and `nova events audit` reads it (repository.list_entries). Its tables live in their own
schema (service.py's SPEC), migrated with the services.
"""
