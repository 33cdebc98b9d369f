"""The pieces of `serve --workers N` without processes: the worker count, which outboxes a
worker owns and which orphans it drains, the merged /metrics.

Threats: an orphan outbox assigned to no worker (records never delivered) or to two (two
owners of one outbox), a worker count that ignores a container's CPU quota, a merged scrape
that Prometheus cannot parse.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli.workers import usable_cpus, worker_count
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings, load_settings
from gateway.recording.outbox.database import FILE_NAME
from gateway.recording.outboxes import WorkerRole, orphans, outbox_dirs, own_dir
from gateway.recording.service import RecordingService
from gateway.web.worker_metrics import merge
from tests.helpers import opened
from tests.pg import eventually, make_record
from tests.workers_env import sqlite_records


def test_workers_setting_auto_or_a_count() -> None:
    assert load_settings(env={}).workers == 0  # auto
    assert load_settings(env={"GATEWAY_WORKERS": "auto"}).workers == 0
    assert load_settings(env={"GATEWAY_WORKERS": "3"}).workers == 3
    with pytest.raises(ConfigError, match="GATEWAY_WORKERS"):
        load_settings(env={"GATEWAY_WORKERS": "-1"})
    assert worker_count(3) == 3
    assert worker_count(0) == usable_cpus() >= 1


def outbox_at(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FILE_NAME).touch()
    return folder


def test_every_orphan_has_exactly_one_owner(tmp_path: Path) -> None:
    root = outbox_at(tmp_path)
    w = {i: outbox_at(tmp_path / f"worker-{i}") for i in range(1, 6)}
    (tmp_path / "worker-x").mkdir()  # not a worker folder
    assert outbox_dirs(tmp_path) == [root, *w.values()]
    assert orphans(tmp_path, None) == list(w.values())  # a single process adopts them all
    for count in (1, 2, 3, 5):
        owned = [orphans(tmp_path, WorkerRole(i, count)) for i in range(1, count + 1)]
        flat = [p for part in owned for p in part]
        expected = [root, *(w[i] for i in range(count + 1, 6))]
        assert sorted(flat) == sorted(expected) and len(flat) == len(set(flat))
        assert all(own_dir(tmp_path, WorkerRole(i, count)) not in flat for i in range(1, count + 1))


async def test_a_worker_drains_the_single_process_outbox_then_removes_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    outbox = await opened(data, durability="process")  # <data>/outbox.sqlite3: --workers 1's
    assert outbox.path == data / FILE_NAME
    records = [make_record(f"s{i}") for i in range(50)]
    for r in records:
        await outbox.append(r, "receipt")
    await outbox.close()
    settings = Settings(data_dir=data, durability="process", receipt_key="k" * 32)
    service = RecordingService(settings, worker=WorkerRole(1, 2))
    await service.start()
    try:
        await eventually(lambda: not (data / FILE_NAME).exists(), within=20)
    finally:
        await service.stop()
    assert sorted(sqlite_records(data)) == sorted(r.record_id for r in records)


def test_merged_metrics_label_every_worker_and_parse() -> None:
    one = (
        b"# HELP consent_outbox_commits_total Group commits.\n"
        b"# TYPE consent_outbox_commits_total counter\n"
        b"consent_outbox_commits_total 3.0\n"
        b'# HELP consent_task_up Up.\n# TYPE consent_task_up gauge\nconsent_task_up{task="f"} 1.0\n'
    )
    two = one.replace(b"3.0", b"5.0")
    text = merge({"1": one, "2": two}).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    commits = {s.labels["worker"]: s.value for s in families["consent_outbox_commits"].samples}
    assert commits == {"1": 3.0, "2": 5.0}
    assert text.count("# TYPE consent_outbox_commits_total counter") == 1  # one family, grouped
    up = families["consent_task_up"].samples
    assert {(s.labels["task"], s.labels["worker"]) for s in up} == {("f", "1"), ("f", "2")}
    assert families["gateway_workers_scraped"].samples[0].value == 2
