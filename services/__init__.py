"""Nova's services, one package each (services/<name>/, declared by its service.py's SPEC),
the runtime they share (runtime/), the one list of them (registry.py) and the `nova`
command (cli/)."""
