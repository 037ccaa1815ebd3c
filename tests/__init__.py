"""Nova's tests: unit, integration (real servers and PostgreSQL), e2e (the real nova command)."""
