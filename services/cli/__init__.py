"""The `nova` command: main.py registers the command groups, each group its own module."""
