"""Per-tenant encryption at rest: envelope encryption with crypto-shredding.

Each tenant has its own data keys (AES-256-GCM, versioned so they can be rotated) and a
blind-index key (HMAC-SHA256, so an encrypted column can still be looked up by equality).
Those keys are kept outside PostgreSQL, wrapped by a master key, so a database backup holds
no key material and destroying a tenant's keys makes every copy of its rows unreadable,
backups included. master_key.py wraps and unwraps, key_store.py keeps each tenant's wrapped
keys, fields.py encrypts values and computes blind indexes with them.
"""
