"""Nova's GraphQL gateway: one schema over the gRPC services, talking only gRPC."""
