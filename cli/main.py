"""The ``clickstream`` command: one group for every command.

Errors of this project become one line on stderr and a non-zero exit code, in one place (:class:`CLI`).
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import click

from cli.derived_commands import audience, demand
from cli.kafka_commands import produce, replay, subscribe, topics
from cli.model_commands import evaluate, explain, export_serving, promote, train
from cli.privacy_commands import forget
from cli.worker_commands import intent
from core.errors import ClickstreamError
from core.log_throttle import throttle_repeats


class CLI(click.Group):
    """Maps ClickstreamError to one line and its exit code; Ctrl-C to exit code 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClickstreamError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=CLI, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Streaming next-intent prediction for online shoppers.

    Produce clicks to Kafka, read the predictions the worker (`faust -A streams.app worker`) makes, replay
    history for backfill, and train and evaluate the model.
    """
    # the Kafka clients' warnings (a broker restarting, say) as one line each, repeats once per 10 s with a count
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    throttle_repeats()


for command in (topics, produce, subscribe, replay, train, evaluate, promote, export_serving, explain, intent, demand,
                audience, forget):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="clickstream")
