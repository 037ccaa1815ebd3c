"""What every service shares: config, database, migrations, auth, errors, ids, pagination,
validation, logs, metrics, the server bootstrap, the SPECs services declare (spec.py) and the
event path (events/). It imports no service, no registry, no CLI and no gateway."""
