"""``forget``: a shopper's data deleted on request (core/privacy.py)."""
from __future__ import annotations

import time

import click

from cli.options import broker_option, config_option, env_option, settings_from
from core.errors import ClickstreamError


@click.command()
@click.argument("users", nargs=-1, required=True)
@click.option("--readmit", is_flag=True,
              help="Accept these forgotten users' events again, from now on (event time); their forgotten history "
                   "stays dropped.")
@env_option("--wait-s", env="CLICKSTREAM_WAIT_S", type=float, default=0.0, show_default=True,
            help="Wait up to this long for a worker to confirm each request on the forgotten-users topic (0: "
                 "send and return).")
@config_option
@broker_option
def forget(users: tuple[str, ...], readmit: bool, wait_s: float, config_file: str | None, broker: str | None) -> None:
    """Forget USERS: ask the worker to delete their window and audience state and to drop their events.

    A request goes to the forget topic (CLICKSTREAM_FORGET_TOPIC), keyed by user id; any service can send one
    (value: a JSON object, {} or {"readmit": true}). The worker holding the user deletes the window and audience
    state (tombstones in both changelogs) and records the user on the compacted forgotten-users topic; from then on
    the worker, `replay` and `train --from-topic` drop the user's events. A forgotten user stays forgotten until
    `--readmit`. Predictions and audience entries already sent are not recalled: those topics age out after
    CLICKSTREAM_RETENTION_DAYS.
    """
    from core.kafka import ensure_topics, send_all
    from core.privacy import ForgetRequest, read_forgotten

    s = settings_from(config_file, broker=broker)
    now_ms = int(time.time() * 1000)
    requests = [ForgetRequest(user, readmit, now_ms) for user in dict.fromkeys(users)]
    ensure_topics(s, [s.forget_topic], configs=s.retention_configs())
    sent = send_all(s, s.forget_topic, [(r.key, r.to_json(), now_ms) for r in requests])
    if sent.failed:
        raise ClickstreamError(f"{sent.failed} of {len(requests)} forget requests were not delivered to "
                               f"{s.forget_topic} (first error: {sent.first_error}); send them again")
    what = "readmission" if readmit else "forget"
    click.echo(f"{what} requested for {len(requests)} users on {s.forget_topic}", err=True)
    if wait_s <= 0:
        return
    deadline = time.monotonic() + wait_s
    key_of = s.user_ids().key_of  # the worker records the pseudonym, with pseudonymous ids
    while True:
        records = read_forgotten(s)
        waiting = [r.user_id for r in requests if (record := records.get(key_of(r.user_id).encode())) is None
                   or (record.readmitted_at_ms if readmit else record.forgotten_at_ms) != now_ms]
        if not waiting:
            click.echo(f"{what} confirmed for {len(requests)} users on {s.forgotten_topic}", err=True)
            return
        if time.monotonic() > deadline:
            raise ClickstreamError(f"no worker confirmed the {what} of {len(waiting)} users ({', '.join(waiting[:5])}"
                                   f"{', ...' if len(waiting) > 5 else ''}) within {wait_s:g}s: is a worker running? "
                                   f"The requests stay on {s.forget_topic} and are applied when one runs")
        time.sleep(0.5)
