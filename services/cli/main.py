"""The `nova` command: registers each command group, nothing else."""

import logging

import click

from services.cli.common import load_config
from services.cli.events import events, relay_command
from services.cli.migrate import migrate
from services.cli.seed import seed_command
from services.cli.supervisor import follow_supervisor
from services.cli.tenants import tenants
from services.cli.up import serve_one, up
from services.runtime.logs import configure_logging


@click.group()
def main() -> None:
    """Nova: a gRPC-first social network backend."""
    follow_supervisor()
    configure_logging(load_config().log_level)
    # pgserver narrates every start at INFO; its warnings still show.
    for chatty in ("pgserver", "httpx", "aiokafka"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


for command in (up, serve_one, migrate, seed_command, relay_command, events, tenants):
    main.add_command(command)
