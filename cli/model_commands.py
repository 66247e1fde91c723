"""``clickstream train``, ``evaluate`` and ``explain`` (TensorFlow is imported only when they run)."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from cli.options import broker_option, config_option, env_option, iter_logs, log_format_options, settings_from
from core.errors import InputError
from core.settings import DEFAULT_MODEL_DIR
from model.config import ARCHITECTURES, NetworkConfig, TrainConfig

DEFAULTS = TrainConfig()


def event_source_options(f: Any) -> Any:
    """LOGS, or a time range of a Kafka topic of clicks (``cli/topic_clicks.py``), to train or evaluate on."""
    for option in reversed([
        config_option, broker_option,
        env_option("--from-topic", env="CLICKSTREAM_FROM_TOPIC", metavar="TOPIC",
                   help="Read the clicks of this Kafka topic instead of LOGS (decoded as the worker decodes them, "
                        "up to its end when the read starts)."),
        env_option("--since", env="CLICKSTREAM_SINCE", metavar="DURATION",
                   help="With --from-topic: clicks of this long before now (7d, 12h, 90m)."),
        env_option("--from-time", env="CLICKSTREAM_FROM_TIME", metavar="TIME",
                   help="With --from-topic: clicks at or after this time (ISO 8601, UTC unless it says otherwise, "
                        "or epoch ms)."),
        env_option("--until", env="CLICKSTREAM_UNTIL", metavar="TIME",
                   help="With --from-topic: clicks before this time (ISO 8601, epoch ms, or a duration before now).")]):
        f = option(f)
    f = log_format_options(f)
    return click.argument("logs", nargs=-1, type=click.Path(exists=True, dir_okay=False))(f)


def read_events(logs: tuple[str, ...], fmt: str, mapping: str | None, config_file: str | None, broker: str | None,
                from_topic: str | None, since: str | None, from_time: str | None,
                until: str | None) -> tuple[list[str], str, Any]:
    """(names of the sources, format, events or None): None where the model code reads LOGS itself."""
    if not from_topic and (since or from_time or until):
        raise click.UsageError("--since, --from-time and --until select a time range of --from-topic")
    if bool(logs) == bool(from_topic):
        raise click.UsageError("give LOGS or --from-topic TOPIC (one of the two)")
    if not from_topic:
        return list(logs), fmt, None
    if since and from_time:
        raise click.UsageError("give --since or --from-time, not both")
    from cli.topic_clicks import clicks_from_topic, parse_time
    from core.logs import ReadReport
    from model.data import clean_events

    try:
        start = parse_time(since or from_time) if (since or from_time) else None
        end = parse_time(until) if until else None
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    s = settings_from(config_file, broker=broker)
    report = ReadReport(f"topic {from_topic}")
    log = clean_events(clicks_from_topic(s, from_topic, report, start_ms=start, end_ms=end,
                                         progress=sys.stderr.isatty()))
    click.echo(f"{report.summary()}; {len(log)} events of {log.n_users} users kept", err=True)
    if len(log) == 0:
        raise InputError(f"no usable clicks in topic {from_topic!r} in that time range ({report.summary()})")
    name = f"kafka:{from_topic}" + (f" [{start} ms" if start else " [beginning") + (f", {end} ms)" if end else ", end)")
    return [name], "topic", (log, [report])


@click.command()
@event_source_options
@env_option("--out", env="CLICKSTREAM_MODEL_DIR", default=DEFAULT_MODEL_DIR, show_default=True,
            type=click.Path(file_okay=False), help="Artifact folder to write.")
@env_option("--window-length", env="CLICKSTREAM_TRAIN_WINDOW_LENGTH", type=int,
            default=DEFAULTS.window_length, show_default=True,
            help="Events per window (N); the worker keeps the N of the model it serves.")
@env_option("--arch", env="CLICKSTREAM_TRAIN_ARCH", type=click.Choice(ARCHITECTURES),
            default=DEFAULTS.arch, show_default=True,
            help="The sequence layers over the window: an LSTM, a GRU, or a small causal Transformer "
                 "(self-attention over the window's earlier events, SASRec-like). All three serve in NumPy.")
@env_option("--units", env="CLICKSTREAM_LSTM_UNITS", type=int,
            default=DEFAULTS.lstm_units, show_default=True, help="Units of the sequence layers.")
@env_option("--layers", env="CLICKSTREAM_LSTM_LAYERS", type=int,
            default=DEFAULTS.lstm_layers, show_default=True, help="Stacked LSTM or GRU layers, or Transformer blocks.")
@env_option("--recurrent-steps", env="CLICKSTREAM_RECURRENT_STEPS", type=int,
            default=DEFAULTS.recurrent_steps, show_default=True,
            help="The sequence layers read only this many newest events (0: the whole window); the pointer "
                 "still reads the whole window. 16 serves about twice as fast at N=50 for a slightly lower MRR.")
@env_option("--dropout", env="CLICKSTREAM_DROPOUT", type=float,
            default=DEFAULTS.dropout, show_default=True, help="Dropout on the LSTM inputs and its final state.")
@env_option("--epochs", env="CLICKSTREAM_EPOCHS", type=int,
            default=DEFAULTS.epochs, show_default=True,
            help="Most epochs (0: from the data size, 12 to 60); early stopping on the validation loss usually "
                 "ends sooner.")
@env_option("--max-fit-seconds", env="CLICKSTREAM_MAX_FIT_SECONDS", type=float,
            default=DEFAULTS.max_fit_seconds, show_default=True,
            help="Time budget of the fitting loop: no epoch starts that would end after it (0: no limit).")
@env_option("--batch-size", env="CLICKSTREAM_TRAIN_BATCH_SIZE", type=int,
            default=DEFAULTS.batch_size, show_default=True, help="Training batch size.")
@env_option("--test-fraction", env="CLICKSTREAM_TEST_FRACTION", type=float,
            default=DEFAULTS.test_fraction, show_default=True,
            help="Last part of the time range held out for evaluation.")
@env_option("--val-fraction", env="CLICKSTREAM_VAL_FRACTION", type=float,
            default=DEFAULTS.val_fraction, show_default=True,
            help="Part of the time range before the test part, for early stopping.")
@env_option("--seed", env="CLICKSTREAM_SEED", type=int,
            default=DEFAULTS.seed, show_default=True,
            help="Seed of every random choice: same data + same seed = same model.")
@env_option("--final", env="CLICKSTREAM_TRAIN_FINAL", is_flag=True,
            help="The model to deploy: after the choices made on validation, the stored signals (popularity, "
                 "Markov, item and session kNN) are counted on the whole log, the test slice included. Without "
                 "it they are counted on everything before the test slice, which `evaluate` then scores "
                 "honestly.")
@env_option("--tensorboard", env="CLICKSTREAM_TENSORBOARD", is_flag=True,
            help="Also write TensorBoard logs to OUT/tensorboard.")
def train(logs: tuple[str, ...], fmt: str, mapping: str | None, config_file: str | None, broker: str | None,
          from_topic: str | None, since: str | None, from_time: str | None, until: str | None, out: str,
          window_length: int, arch: str, units: int, layers: int, recurrent_steps: int, dropout: float, epochs: int,
          max_fit_seconds: float, batch_size: int, test_fraction: float, val_fraction: float, seed: int,
          final: bool, tensorboard: bool) -> None:
    """Train the next-intent network on LOGS or a topic's clicks (time split: train on the earlier part) and
    write an artifact."""
    from model.train import train as run

    names, fmt, events = read_events(logs, fmt, mapping, config_file, broker, from_topic, since, from_time, until)

    config = TrainConfig(window_length=window_length, arch=arch, lstm_units=units, lstm_layers=layers,
                         recurrent_steps=recurrent_steps, dropout=dropout,
                         epochs=epochs, max_fit_seconds=max_fit_seconds, batch_size=batch_size,
                         test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, final=final)
    manifest = run(names, fmt, out, config, mapping=mapping, tensorboard=tensorboard,
                   verbose="auto" if sys.stderr.isatty() else 2, events=events)
    t = manifest["training"]
    click.echo(f"model {manifest['version']} written to {out}: {t['train_examples']} training examples "
               f"({t['events']} events kept; {t['skipped']}), {t['epochs_run']} epochs (best {t['best_epoch']}), "
               f"{t['seconds']}s; {len(manifest['features']['categories'])} categories in the vocabulary")
    click.echo(validation_table(manifest["validation"]))
    purchase = manifest["validation"].get("purchase", {})
    losses = ", ".join(f"{k} {v:.4f}" for k, v in purchase.get("cross_validated_log_loss", {}).items())
    click.echo(f"purchase probability: {purchase.get('served', 'the network head')}"
               + (f" (cross-validated log loss on the validation slice: {losses})" if losses else ""))
    warning = beats_baselines_warning(manifest["validation"])
    if warning:
        click.echo(warning, err=True)


def validation_table(validation: dict[str, Any]) -> str:
    """The validation slice's next-category comparison, as training prints it."""
    rows = validation["next_category"]
    lines = [f"validation ({validation['targets']} events; mix weights {validation['mix']}):",
             f"  {'method':<34} {'HR@1':>7} {'HR@5':>7} {'MRR@10':>7}"]
    for name, m in rows.items():
        mark = " <- best baseline" if name == validation["best_baseline"] else ""
        lines.append(f"  {name:<34} {m['hr@1']:7.4f} {m['hr@5']:7.4f} {m['mrr@10']:7.4f}{mark}")
    return "\n".join(lines)


def beats_baselines_warning(validation: dict[str, Any]) -> str | None:
    """One line when the model does not beat the best baseline on the validation slice."""
    rows = validation["next_category"]
    ours, best = rows["model"], rows[validation["best_baseline"]]
    if ours["hr@5"] > best["hr@5"] and ours["mrr@10"] > best["mrr@10"]:
        return None
    return (f"warning: on the validation slice the model does not beat {validation['best_baseline']} "
            f"(HR@5 {ours['hr@5']:.4f} vs {best['hr@5']:.4f}, MRR@10 {ours['mrr@10']:.4f} vs "
            f"{best['mrr@10']:.4f})")


@click.command()
@click.argument("candidate", type=click.Path(file_okay=False))
@event_source_options
@env_option("--serving", "link", env="CLICKSTREAM_SERVING_LINK", required=True, type=click.Path(),
            help="The symlink the workers serve (their CLICKSTREAM_MODEL_DIR); swapped to CANDIDATE when it wins.")
@env_option("--metric", env="CLICKSTREAM_PROMOTE_METRIC", type=click.Choice(["hr@1", "hr@5", "mrr@10"]),
            default="mrr@10", show_default=True, help="The agreed metric of the next category.")
@env_option("--models-topic", env="CLICKSTREAM_MODELS_TOPIC", default="models", show_default=True,
            help="Compacted topic that records every decision (key: the serving link's name).")
@env_option("--dry-run", env="CLICKSTREAM_DRY_RUN", is_flag=True,
            help="Compare and print the decision; record nothing and swap nothing.")
def promote(candidate: str, logs: tuple[str, ...], fmt: str, mapping: str | None, config_file: str | None,
            broker: str | None, from_topic: str | None, since: str | None, from_time: str | None, until: str | None,
            link: str, metric: str, models_topic: str, dry_run: bool) -> None:
    """Champion and challenger: evaluate CANDIDATE and the model --serving points to on the same newest events
    (LOGS or --from-topic with a time range after the candidate's training data), and swap the link to
    CANDIDATE unless it is worse beyond the 95 % interval on --metric; the workers' rollout then serves it
    without a restart. Exit 0 when promoted, 7 when refused; every decision goes to --models-topic."""
    import json
    import os
    import time

    from core.kafka import ensure_topics, send_all
    from model.artifact import read_manifest
    from model.evaluate import compare
    from model.predictor import Predictor

    link_path = Path(link)
    if link_path.exists() and not link_path.is_symlink():
        raise InputError(f"{link} is not a symlink: point the workers' CLICKSTREAM_MODEL_DIR at a symlink to "
                         "an artifact folder, so that a promotion can swap it")
    Predictor(candidate)  # a candidate that does not load is refused here, in one line (ModelError)
    names, fmt, events = read_events(logs, fmt, mapping, config_file, broker, from_topic, since, from_time, until)
    if events is None:
        from model.data import load_events

        events = load_events(names, fmt, mapping)
    log = events[0]
    trained_until = read_manifest(candidate)["training"].get("last_event_ms")
    if trained_until is not None and int(log.times_ms.min()) <= trained_until:
        raise InputError(f"the comparison events start at {int(log.times_ms.min())} ms, not after the "
                         f"candidate's training data (up to {trained_until} ms): choose newer events "
                         f"(--from-time {trained_until + 1})")
    serving = os.path.realpath(link_path) if link_path.exists() else None
    if serving is None:
        result: dict[str, Any] = {"decision": "promoted", "why": f"nothing served at {link} yet"}
    else:
        found = compare(candidate, serving, log, metric=metric, progress=sys.stderr.isatty())
        lo, hi = found["difference_interval"]
        click.echo(f"{found['targets']} events of {found['users']} users ({names[0]}{', ...' if len(names) > 1 else ''})")
        for name in ("serving", "candidate"):
            m, ci = found[name], found["intervals"][name]
            click.echo(f"  {name:<9} {found['versions'][name]:<26} HR@1 {m['hr@1']:.4f}  HR@5 {m['hr@5']:.4f} "
                       f"[{ci['hr@5'][0]:.3f}, {ci['hr@5'][1]:.3f}]  MRR@10 {m['mrr@10']:.4f} "
                       f"[{ci['mrr@10'][0]:.3f}, {ci['mrr@10'][1]:.3f}]")
        click.echo(f"  candidate - serving on {metric}: {found['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        worse = hi < 0
        result = {"decision": "refused" if worse else "promoted",
                  "why": f"{metric} {'worse beyond' if worse else 'not worse beyond'} the 95 % interval", **found}
    record = {"link": str(link_path), "candidate": str(Path(candidate).resolve()), "serving": serving,
              "decided_at_ms": int(time.time() * 1000), **result}
    if dry_run:
        click.echo(f"dry run: would be {result['decision']} ({result['why']})")
        return
    s = settings_from(config_file, broker=broker)
    ensure_topics(s, [models_topic], partitions=1, configs={"cleanup.policy": "compact"})
    sent = send_all(s, models_topic, [(link_path.name.encode(), json.dumps(record).encode(), record["decided_at_ms"])])
    if sent.failed:
        raise InputError(f"the decision could not be recorded on {models_topic} ({sent.first_error}): nothing swapped")
    if result["decision"] == "refused":
        click.echo(f"refused: {result['why']}; {link} still serves {serving}", err=True)
        sys.exit(EXIT_REFUSED)
    swap = link_path.with_name(f".{link_path.name}.promote")
    swap.unlink(missing_ok=True)
    swap.symlink_to(Path(candidate).resolve())
    os.replace(swap, link_path)  # atomic: a worker sees the old target or the new one
    click.echo(f"promoted: {link} -> {Path(candidate).resolve()} ({result['why']}); recorded on {models_topic}")


EXIT_REFUSED = 7


@click.command()
@event_source_options
@env_option("--model", "model_dir", env="CLICKSTREAM_MODEL_DIR", default=DEFAULT_MODEL_DIR, show_default=True,
            type=click.Path(file_okay=False), help="Model artifact folder.")
@env_option("--split", env="CLICKSTREAM_SPLIT", type=click.Choice(["time", "none"]), default="time",
            show_default=True, help="time: the test part of the log's time range (as in training); "
                                    "none: every event of a log the model never saw.")
@env_option("--out", env="CLICKSTREAM_REPORT_DIR", type=click.Path(file_okay=False),
            help="Folder for report.md, metrics.json and comparison.png (default: MODEL/evaluation).")
@env_option("--max-events", env="CLICKSTREAM_MAX_EVENTS", type=int,
            help="Evaluate a random sample of this many events.")
@env_option("--runtime", env="CLICKSTREAM_RUNTIME", type=click.Choice(["numpy", "tensorflow"]), default="numpy",
            show_default=True, help="What computes the network, as in the worker: the artifact's serving.npz in "
                                    "NumPy, or the Keras network compiled by TensorFlow.")
def evaluate(logs: tuple[str, ...], fmt: str, mapping: str | None, config_file: str | None, broker: str | None,
             from_topic: str | None, since: str | None, from_time: str | None, until: str | None, model_dir: str,
             split: str, out: str | None, max_events: int | None, runtime: str) -> None:
    """Compare the model with baselines on LOGS or a topic's clicks; print the report and write it with charts."""
    from model.evaluate import evaluate as run

    names, fmt, events = read_events(logs, fmt, mapping, config_file, broker, from_topic, since, from_time, until)
    out_dir = Path(out) if out else Path(model_dir) / "evaluation"
    run(model_dir, names, fmt, mapping=mapping, split=split, out=out_dir, max_targets=max_events,  # type: ignore[arg-type]
        runtime=runtime, events=events)
    click.echo((out_dir / "report.md").read_text())
    click.echo(f"written to {out_dir}/ (report.md, metrics.json, comparison.png, calibration.png)")




@click.command(name="export")
@click.argument("model_dir", type=click.Path(file_okay=False))
def export_serving(model_dir: str) -> None:
    """Write MODEL_DIR's serving file (serving.npz) from its trained network.

    The worker serves from that file, without TensorFlow; `train` writes it. Run this for a model trained
    before the file existed (the worker refuses such a model with a line naming this command).
    """
    from model.export import export_artifact

    path = export_artifact(model_dir)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@click.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@log_format_options
@env_option("--model", "model_dir", env="CLICKSTREAM_MODEL_DIR", default=DEFAULT_MODEL_DIR, show_default=True,
            type=click.Path(file_okay=False), help="Model artifact folder.")
@env_option("--user", env="CLICKSTREAM_EXPLAIN_USER", required=True,
            help="User id whose window to explain: the newest N events of this user in LOGS, as the worker keeps them.")
@env_option("--plot", env="CLICKSTREAM_EXPLAIN_PLOT", type=click.Path(dir_okay=False),
            help="Also write the attributions as a PNG chart here (needs the plots extra).")
@env_option("--top", env="CLICKSTREAM_EXPLAIN_TOP", type=click.IntRange(1, 50), default=5, show_default=True,
            help="Predicted categories to print.")
def explain(logs: tuple[str, ...], fmt: str, mapping: str | None, model_dir: str, user: str, plot: str | None,
            top: int) -> None:
    """Explain the model's prediction for one user's window of events in LOGS.

    \b
    Prints the predicted categories, then what drove the top one:
    - per event, the drop of its score when the event is masked (its category replaced by one never seen,
      its type by view; occlusion) and the probability the pointer copied from it (attention);
    - per feature group, the drop when all categories, all event types or all time gaps are neutralised.
    All variants of the window are predicted in one call. A positive number means the event (or group)
    raised the top category's score.
    """
    from model.artifact import read_manifest
    from model.explain import (
        DRIVERS_PER_PREDICTION,
        GROUP_MEANINGS,
        GROUPS,
        explain_window,
        plot_explanation,
        require_plots,
    )
    from model.predictor import Predictor
    from streams.window import UserWindow

    if plot:
        require_plots()  # before reading logs and loading the model, not after
    clicks = [c for c in iter_logs(logs, fmt, mapping, strict=False, id_prefix=None, reports=[]) if c.user_id == user]
    if not clicks:
        raise InputError(f"user {user!r} has no events in {', '.join(logs)}")
    n = NetworkConfig.from_json(read_manifest(model_dir)["network"]).window_length
    window = UserWindow.empty()  # the user's window as the worker keeps it: the newest n events, by event time
    for c in clicks:
        window.add(c.event_id, c.category_id, c.event_type, c.event_time_ms, n)
    # one call: the window, each event masked, each group neutralised; top_k large enough to find the top
    # category in every variant
    predictor = Predictor(model_dir, batch_sizes=(len(window) + 1 + len(GROUPS),), lengths=(len(window),),
                          top_k=100, drivers=DRIVERS_PER_PREDICTION)
    result = explain_window(predictor.predict, window.model_window())
    click.echo(f"user {user}: {len(clicks)} events in the log; the window holds the newest {len(window)} "
               f"(model {predictor.version}, N={predictor.window_length})")
    click.echo("predicted next categories: " + ", ".join(f"{c} {s:.3f}" for c, s in result.top_categories[:top]))
    click.echo(f"why {result.category} (score {result.score:.3f}): its score minus its score with the event masked "
               f"(occlusion), and the probability the pointer copied from the event to its own category")
    width = max(8, *(len(e.category_id) for e in result.events))
    click.echo(f"  {'pos':>4}  {'time (UTC)':<19}  {'category':<{width}}  {'type':<16}  {'occlusion':>9}  {'pointer':>7}")
    for e in result.events:
        when = datetime.fromtimestamp(e.event_time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        mark = "  <- top category" if e.category_id == result.category else ""
        copied = f"{e.copied:7.3f}" if e.copied is not None else f"{'-':>7}"
        click.echo(f"  {e.position:>4}  {when:<19}  {e.category_id:<{width}}  {e.event_type:<16}  "
                   f"{e.occlusion:+9.3f}  {copied}{mark}")
    click.echo("feature groups, the score's drop when neutralised:")
    for name, value in result.groups.items():
        click.echo(f"  {name:<10}  {value:+9.3f}  {GROUP_MEANINGS[name]}")
    drivers = ", ".join(f"position {d.position} ({d.event_type}) {d.weight:.3f}" for d in result.drivers)
    click.echo(f"drivers (what a prediction carries with explain_predictions): {drivers or 'none, not copied'}")
    if plot:
        plot_explanation(result, plot, f"user {user}")
        click.echo(f"plot written to {plot}")
