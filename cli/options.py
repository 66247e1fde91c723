"""Options shared by the commands; every option falls back to an environment variable shown in ``--help``."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from core.errors import InputError
from core.logs import FORMATS, ColumnMapping, ReadReport, read_log
from core.records import Click
from core.settings import Settings, load_settings


def env_option(*decls: str, env: str, **kwargs: Any) -> Any:
    return click.option(*decls, envvar=env, show_envvar=True, **kwargs)


config_option = env_option("--config", "config_file", env="CLICKSTREAM_CONFIG", type=click.Path(dir_okay=False),
                           help="YAML settings file (defaults < file < CLICKSTREAM_* variables < options).")
broker_option = env_option("--broker", env="CLICKSTREAM_BROKER",
                           help="Kafka bootstrap servers, host:port[,host:port] (default 127.0.0.1:9092).")


def settings_from(config_file: str | None, **overrides: Any) -> Settings:
    return load_settings(config_file, **overrides)


def log_format_options(f: Any) -> Any:
    """How to read historical logs: their format and, for generic logs, the column mapping."""
    f = env_option("--mapping", env="CLICKSTREAM_MAPPING", type=click.Path(dir_okay=False),
                   help="YAML column mapping for --format generic.")(f)
    f = env_option("--format", "fmt", env="CLICKSTREAM_FORMAT", type=click.Choice(FORMATS), default="taobao",
                   show_default=True, help="Log format: Taobao UserBehavior, REES46, or generic CSV/JSONL.")(f)
    return f


def log_send_options(f: Any) -> Any:
    """Options of the commands that send a log's rows as clicks (produce, replay)."""
    f = env_option("--strict", env="CLICKSTREAM_STRICT", is_flag=True,
                   help="Fail on the first bad row instead of skipping it.")(f)
    f = env_option("--id-prefix", env="CLICKSTREAM_ID_PREFIX",
                   help="Event ids are PREFIX:LINE (default: the file name); change it to replay with fresh ids.")(f)
    return log_format_options(f)


def iter_logs(paths: Sequence[str], fmt: str, mapping: str | None, strict: bool, id_prefix: str | None,
              reports: list[ReadReport]) -> Iterator[Click]:
    """Clicks of several logs one after the other, a ReadReport per file appended to ``reports``."""
    column_mapping = ColumnMapping.load(mapping) if mapping else None
    for path in paths:  # fail before anything is sent, not after the first file
        if not Path(path).is_file():
            raise InputError(f"log file {path} does not exist")
    for path in paths:
        report = ReadReport(str(path))
        reports.append(report)
        # several files with one prefix would repeat PREFIX:LINE ids
        prefix = f"{id_prefix}-{path}" if id_prefix and len(paths) > 1 else id_prefix
        yield from read_log(path, fmt, mapping=column_mapping, strict=strict, report=report,  # type: ignore[arg-type]
                            id_prefix=prefix)


def send_options(f: Any) -> Any:
    """Where and how produce and replay send: checkpoint, topic, settings, broker, progress bar."""
    for option in reversed([
        env_option("--checkpoint", env="CLICKSTREAM_CHECKPOINT", type=click.Path(dir_okay=False),
                   help="File that records how many clicks are delivered; a rerun resumes after them."),
        env_option("--topic", env="CLICKSTREAM_CLICKS_TOPIC", help="Target topic (default: clicks)."),
        config_option, broker_option,
        env_option("--quiet", "-q", env="CLICKSTREAM_QUIET", is_flag=True, help="No progress bar."),
    ]):
        f = option(f)
    return f
