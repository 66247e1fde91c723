"""Commands that ask a running worker over its web server: ``intent``."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import click

from cli.options import env_option
from core.errors import BrokerUnavailable, ClickstreamError


@click.command()
@click.argument("user")
@env_option("--worker-url", env="CLICKSTREAM_WORKER_URL", default="http://127.0.0.1:6066", show_default=True,
            help="Web address of any worker of the app (it forwards the question to the user's worker).")
@env_option("--timeout-s", env="CLICKSTREAM_TIMEOUT_S", type=float, default=10.0, show_default=True,
            help="Give up after this many seconds.")
def intent(user: str, worker_url: str, timeout_s: float) -> None:
    """Print USER's current predicted intent (JSON), from the worker that holds the user's window."""
    url = f"{worker_url.rstrip('/')}/users/{urllib.parse.quote(user, safe='')}/intent"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            click.echo(json.dumps(json.load(response), separators=(",", ":")))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.load(exc).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise ClickstreamError(f"{url}: {exc.code} {reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise BrokerUnavailable(f"no worker answered at {worker_url} ({getattr(exc, 'reason', exc)}); start one "
                                "with `faust -A streams.app worker` or set CLICKSTREAM_WORKER_URL") from None
