"""Nova's gRPC services, one package each, and the runtime they share."""
