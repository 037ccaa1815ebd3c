"""grpc.aio interceptors, one concern per module, each knowing nothing about any service."""
