"""`python -m services.cli`: how supervised child processes run `nova` (no script needed)."""

from services.cli.main import main

main()
