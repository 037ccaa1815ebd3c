"""Tenants: the registry every service resolves callers' tenants in, and the current one."""
