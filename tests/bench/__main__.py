"""`./dev bench <scenario>` (python -m tests.bench): one command per benchmark."""

import logging

import click

from services.cli.common import load_config
from services.runtime.logs import configure_logging
from tests.bench import (
    analytics,
    breaker,
    cache,
    events,
    fanout,
    feed,
    hedging,
    layouts,
    overhead,
    overhead_instructions,
    overload,
    replicas,
    rotation,
    rpc,
)


@click.group()
def main() -> None:
    """Nova's benchmarks: each drives its servers with an open-loop load generator and
    prints its variants side by side (tests/bench/README.md says what each measures)."""
    configure_logging(load_config().log_level)
    # pgserver narrates every start at INFO; its warnings still show.
    for chatty in ("pgserver", "httpx", "aiokafka"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


for scenario in (
    rpc,
    overload,
    overhead,
    overhead_instructions,
    breaker,
    hedging,
    rotation,
    feed,
    layouts,
    fanout,
    events,
    cache,
    analytics,
    replicas,
):
    main.add_command(scenario.command)

if __name__ == "__main__":
    main(prog_name="./dev bench")
