"""What every service shares: config, database, migrations, auth, server bootstrap, CLI."""
