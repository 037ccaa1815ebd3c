"""gRPC interceptors, knowing nothing about any service: the server chain and its layers
(interceptors.server), the client stack (interceptors.client), and the wire keys and
context variables both sides share (interceptors.context)."""
