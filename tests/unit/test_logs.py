from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import pytest

from core.errors import ConfigError, InputError
from core.logs import ColumnMapping, ReadReport, read_log

TAOBAO = """1,10,100,pv,1511544070
1,11,100,cart,1511544075
2,12,abc,buy,1511544080
3,13,100,jump,1511544081
4,14,100,pv
,15,100,pv,1511544090
5,16,100,fav,not-a-time
"""


def test_taobao_rows_become_clicks_and_bad_rows_are_counted_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ub.csv"
    path.write_text(TAOBAO)
    report = ReadReport(str(path))
    clicks = list(read_log(path, "taobao", report=report))
    assert [c.event_type for c in clicks] == ["view", "cart", "purchase"]
    assert clicks[0].to_avro() == {"event_id": "ub.csv:1", "user_id": "1", "session_id": None, "item_id": "10",
                         "category_id": "100", "event_type": "view", "event_time_ms": 1511544070000,
                         "price": None, "user_attributes": {}}
    assert (report.rows, report.good, report.bad) == (7, 3, 4)
    assert report.first_bad == [(4, "unknown behaviour 'jump'"), (5, "expected 5 columns, got 4"),
                                (6, "missing user id"), (7, "bad event time 'not-a-time'")]
    assert "line 4: unknown behaviour 'jump'" in report.summary()


def test_strict_fails_on_the_first_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "ub.csv"
    path.write_text(TAOBAO)
    with pytest.raises(InputError, match="line 4: unknown behaviour"):
        list(read_log(path, "taobao", strict=True))


def test_gzip_is_read_transparently_and_missing_files_are_one_error(tmp_path: Path) -> None:
    path = tmp_path / "ub.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(TAOBAO)
    assert len(list(read_log(path, "taobao"))) == 3
    assert next(read_log(path, "taobao")).event_id == "ub.csv:1"
    with pytest.raises(InputError, match="does not exist"):
        list(read_log(tmp_path / "nope.csv", "taobao"))


def test_rees46_keeps_19_digit_ids_sessions_and_prices(tmp_path: Path) -> None:
    path = tmp_path / "rees.csv"
    path.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d7\n"
        "2019-10-01 00:00:01 UTC,teleport,1,2,,,1.0,3,s\n")
    report = ReadReport("rees")
    (click,) = read_log(path, "rees46", report=report)
    assert click.category_id == "2103807459595387724"
    assert (click.session_id, click.price, click.event_time_ms) == ("72d7", 35.79, 1569888000000)
    assert report.first_bad == [(3, "unknown event type 'teleport'")]


def test_generic_csv_and_jsonl_with_a_yaml_mapping(tmp_path: Path) -> None:
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(
        "format: jsonl\ntime_format: iso\n"
        "columns: {user_id: uid, item_id: sku, category_id: cat, event_type: action, event_time: at, event_id: id}\n"
        "event_types: {click: view, basket: cart}\nuser_attributes: [segment]\n")
    log = tmp_path / "events.jsonl"
    log.write_text('{"uid": 7, "sku": "a", "cat": "shoes", "action": "basket", "at": "2024-01-01T00:00:00Z",'
                   ' "id": "e1", "segment": "vip"}\nnot json\n')
    report = ReadReport("generic")
    (click,) = read_log(log, "generic", mapping=ColumnMapping.load(mapping_file), report=report)
    assert click.event_id == "e1" and click.user_id == "7" and click.event_type == "cart"
    assert click.event_time_ms == 1704067200000 and click.user_attributes == {"segment": "vip"}
    assert report.bad == 1 and report.first_bad[0][0] == 2

    csv_mapping = tmp_path / "csv.yaml"
    csv_mapping.write_text("header: false\ndelimiter: ';'\ntime_format: unix_ms\n"
                           "columns: {user_id: 0, item_id: 1, category_id: 2, event_type: 3, event_time: 4}\n")
    csv_log = tmp_path / "events.csv"
    csv_log.write_text("u1;i1;c1;purchase;1700000000123\n")
    (click,) = read_log(csv_log, "generic", mapping=ColumnMapping.load(csv_mapping))
    assert (click.event_type, click.event_time_ms, click.event_id) == ("purchase", 1700000000123,
                                                                                 "events.csv:1")


def test_generic_mapping_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: {user_id: u}\n")
    with pytest.raises(ConfigError, match="missing columns"):
        ColumnMapping.load(bad)
    with pytest.raises(ConfigError, match="needs a column mapping"):
        list(read_log(bad, "generic"))


def test_reading_is_streaming_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        for i in range(200_000):
            f.write(f"{i % 5000},{i},{i % 300},pv,{1511544070 + i}\n")
    tracemalloc.start()
    count = sum(1 for _ in read_log(path, "taobao"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 200_000
    assert peak < 5 * 2**20, f"peak {peak} bytes: the reader holds rows in memory"  # the file is ~6 MB


def test_real_taobao_sample_counts(taobao_sample: Path) -> None:
    report = ReadReport(str(taobao_sample))
    users = set()
    for click in read_log(taobao_sample, "taobao", report=report):
        users.add(click.user_id)
    assert report.rows == 195_269 and report.bad == 0
    assert len(users) == 70_847


def test_real_rees46_sample_counts(rees46_sample: Path) -> None:
    report = ReadReport(str(rees46_sample))
    clicks = list(read_log(rees46_sample, "rees46", report=report))
    assert report.rows == 18_117 and report.bad == 0
    assert {c.event_type for c in clicks} <= {"view", "cart", "purchase"}


def test_generic_constant_columns_and_a_day_plus_offset_time(tmp_path: Path) -> None:
    # DIGINETICA's layout: no event type column (every row a view), time = the session's day + ms into it
    mapping = tmp_path / "views.yaml"
    mapping.write_text("delimiter: ';'\ncolumns: {user_id: session_id, item_id: item_id, category_id: item_id,"
                       " event_type: {const: view}, event_time: {day: eventdate, offset_ms: timeframe}}\n")
    log = tmp_path / "views.csv"
    log.write_text("session_id;user_id;item_id;timeframe;eventdate\n1;NA;81766;526309;2016-05-09\n"
                   "1;NA;31331;x;2016-05-09\n")
    report = ReadReport("views")
    (click,) = read_log(log, "generic", mapping=ColumnMapping.load(mapping), report=report)
    # 2016-05-09T00:00Z is 1462752000 s; plus 526.309 s
    assert (click.event_type, click.event_time_ms, click.user_id) == ("view", 1462752526309, "1")
    assert report.first_bad == [(3, "bad day '2016-05-09' or offset 'x'")]


def test_generic_mistyped_column_names_the_column_in_each_bad_row(tmp_path: Path) -> None:
    mapping = tmp_path / "typo.yaml"
    mapping.write_text("columns: {user_id: uid, item_id: sku, category_id: kat, event_type: {const: view},"
                       " event_time: ts}\n")
    log = tmp_path / "e.csv"
    log.write_text("uid,sku,cat,ts\nu1,i1,c1,1700000000\n")
    report = ReadReport("e")
    assert list(read_log(log, "generic", mapping=ColumnMapping.load(mapping), report=report)) == []
    assert report.first_bad == [(2, "no category_id column 'kat' (columns are ['cat', 'sku', 'ts', 'uid'])")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: {user_id: u, item_id: i, category_id: c, event_type: {value: view}, event_time: t}\n")
    with pytest.raises(ConfigError, match="const: VALUE"):
        ColumnMapping.load(bad)


def test_shipped_mappings_read_the_shared_logs(taobao_sample: Path) -> None:
    from model.data import load_events

    mappings = Path(__file__).resolve().parents[2] / "model" / "mappings"
    for name in ("taobao", "rees46", "diginetica"):
        ColumnMapping.load(mappings / f"{name}.yaml")
    data = taobao_sample.parent.parent
    digi = data / "diginetica" / "train-item-views-sample.csv"
    if digi.is_file():
        log, reports = load_events([digi], "generic", str(mappings / "diginetica.yaml"))
        assert reports[0].bad == 0 and log.n_users > 2_900 and len(log) > 12_000  # sessions as users


def test_no_usable_events_error_gives_the_first_bad_rows(tmp_path: Path) -> None:
    from model.data import load_events

    log = tmp_path / "ub.csv"
    log.write_text("1,10,100,jump,1511544070\n1,10,100\n")
    with pytest.raises(InputError, match=r"no usable events \(.*line 1: unknown behaviour 'jump'; "
                                         r"line 2: expected 5 columns, got 3"):
        load_events([log], "taobao")
