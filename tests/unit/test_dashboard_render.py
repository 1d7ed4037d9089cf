"""The dashboard's rendering helpers (coriolis.dashboard.render), its form parsing and its
templates, on plain dicts shaped as coriolis.api.views makes them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coriolis import exceptions
from coriolis.dashboard import render
from coriolis.dashboard.routes import _safe_next, _sse, _templates, migration_body

MiB = 1024 * 1024


def update(done: int, total: int | None, message: str, index: int = 0,
           created: str = "2026-12-01T10:00:00.000000",
           updated: str | None = "2026-12-01T10:00:04.000000") -> dict:
    return {"index": index, "current_step": done, "total_steps": total, "message": message,
            "created_at": created, "updated_at": updated}


def test_disk_bar_uses_the_stated_rate_for_the_eta() -> None:
    bar = render.progress_bar(update(
        40 * MiB, 96 * MiB, "Disk disk0: 40.0 of 96.0 MiB allocated data scanned, 14.0 MiB/s"))
    assert bar.is_disk and bar.label == "Disk disk0"
    assert bar.percent == 41  # floored
    assert bar.rate == 14 * MiB
    assert bar.eta == pytest.approx(4.0)
    assert bar.summary == "41 % · 40.0 MiB of 96.0 MiB · 14.0 MiB/s · ETA 0:04"


def test_disk_bar_without_a_stated_rate_averages_over_the_update_times() -> None:
    bar = render.progress_bar(update(20 * MiB, 100 * MiB, "Disk sda: copying"))
    assert bar.rate == pytest.approx(5 * MiB)  # 20 MiB in 4 s
    assert bar.eta == pytest.approx(16.0)
    no_time = render.progress_bar(update(20 * MiB, 100 * MiB, "Disk sda: copying",
                                         updated=None))
    assert no_time.rate is None and no_time.eta is None
    assert no_time.summary == "20 % · 20.0 MiB of 100.0 MiB"


def test_finished_bar_is_100_without_rate_or_eta() -> None:
    bar = render.progress_bar(update(
        96 * MiB, 96 * MiB, "Disk disk0: scanned 96.0 MiB, changed 96.0 MiB, sent 96.0 MiB in "
        "6.10s"))
    assert bar.finished and bar.percent == 100
    assert bar.rate is None and bar.eta is None
    assert bar.summary == "100 % · 96.0 MiB of 96.0 MiB"


def test_almost_done_is_not_shown_as_100() -> None:
    bar = render.progress_bar(update(96 * MiB - 1, 96 * MiB, "Disk d: x, 1.0 MiB/s"))
    assert bar.percent == 99 and not bar.finished


def test_step_progress_and_unknown_totals() -> None:
    steps = render.progress_bar(update(3, 10, "Waiting for the minion pool"))
    assert not steps.is_disk and steps.label == "Waiting for the minion pool"
    assert steps.summary == "30 % · step 3 of 10" and steps.rate is None
    unknown = render.progress_bar(update(5, None, "Snapshotting: vm1"))
    assert unknown.percent is None and unknown.label == "Snapshotting"
    assert unknown.summary == ""


def test_task_bars_keep_the_latest_update_per_label() -> None:
    task = {"progress_updates": [
        update(10, 100, "Disk a: 10 of 100, 1.0 MiB/s", index=0),
        update(5, 50, "Disk b: 5 of 50, 1.0 MiB/s", index=1),
        update(100, 100, "Disk a: scanned 100", index=2),
    ]}
    bars = render.task_bars(task)
    assert [(b.label, b.percent) for b in bars] == [("Disk a", 100), ("Disk b", 10)]


def task(index: int, task_type: str, status: str, instance: str = "vm1", **extra) -> dict:
    return {"index": index, "instance": instance, "task_type": task_type, "status": status,
            "progress_updates": [], "events": [], "exception_details": None, **extra}


def test_execution_view_groups_by_instance_numbers_passes_and_collects_events() -> None:
    execution = {"id": "e1", "status": "RUNNING", "number": 1, "type": "migration",
                 "action_id": "m1", "tasks": [
                     task(1, "REPLICATE_DISKS", "COMPLETED", progress_updates=[
                         update(8, 8, "Disk d0: scanned 8")],
                          events=[{"index": 0, "level": "INFO", "message": "second",
                                   "created_at": "2026-12-01T10:00:02.000000"}]),
                     task(0, "GET_INSTANCE_INFO", "COMPLETED", events=[
                         {"index": 0, "level": "INFO", "message": "first",
                          "created_at": "2026-12-01T10:00:01.000000"}]),
                     task(2, "REPLICATE_DISKS", "RUNNING", progress_updates=[
                         update(2, 8, "Disk d0: 2 of 8, 1.0 MiB/s")]),
                     task(3, "REPLICATE_DISKS", "ERROR", instance="vm2",
                          exception_details="Image is not in qcow2 format")]}
    view = render.execution_view(execution)
    assert view["active"] is True and view["status"] == "RUNNING"
    vm1, vm2 = view["instances"]
    assert [t["index"] for t in vm1.tasks] == [0, 1, 2]
    assert [b.label for b in vm1.bars] == ["Disk d0, pass 1", "Disk d0, pass 2"]
    assert [b.label for b in vm2.bars] == []
    assert [e["message"] for e in view["events"]] == ["first", "second"]
    assert view["events"][0]["task_type"] == "GET_INSTANCE_INFO"
    assert view["errors"] == ["REPLICATE_DISKS (vm2): Image is not in qcow2 format"]
    assert render.execution_view({**execution, "status": "COMPLETED"})["active"] is False


def test_small_formatters() -> None:
    assert render.human_bytes(512) == "512 B"
    assert render.human_bytes(1536) == "1.5 KiB"
    assert render.human_bytes(3 * 1024 * MiB) == "3.0 GiB"
    assert render.human_duration(75) == "1:15"
    assert render.human_duration(3725) == "1:02:05"
    assert render.human_duration(None) == "–"
    assert render.schedule_text({"minute": 30, "hour": 2}) == "30 2 * * *"
    assert render.schedule_text({"minute": "*/5", "dow": 0}) == "*/5 * * * 0"
    assert render.schedule_text(None) == "* * * * *"
    assert render.status_class("COMPLETED") == "ok"
    assert render.status_class("RUNNING") == "running"
    assert render.status_class("ERROR") == "error"
    assert render.status_class("SCHEDULED") == "idle"
    assert render.status_class(None) == "idle"
    assert render.is_active("CANCELLING") and not render.is_active("CANCELED")


def test_sse_frames_every_line() -> None:
    assert _sse("execution", "<p>\n  a\n</p>") == \
        "event: execution\ndata: <p>\ndata:   a\ndata: </p>\n\n"


def test_login_redirect_stays_on_dashboard_pages() -> None:
    assert _safe_next("/dashboard/replicas/r1") == "/dashboard/replicas/r1"
    for bad in (None, "", "https://evil.example/", "//evil.example/dashboard/",
                "/dashboard/data/migrations", "/v1/endpoints", "/dashboard/\\evil"):
        assert _safe_next(bad) == "/dashboard/migrations"


def form(**fields: str) -> dict[str, list[str]]:
    base = {"origin_endpoint_id": "src", "destination_endpoint_id": "dst", "instances": "vm1"}
    return {k: [v] for k, v in {**base, **fields}.items()}


def test_migration_form_to_body() -> None:
    body = migration_body(form(instances="vm1, vm2\nvm3\n", network_map='{"lan": "prod"}',
                               source_environment="", replication_count="1",
                               skip_os_morphing="on", notes="  n  "))
    assert body == {"origin_endpoint_id": "src", "destination_endpoint_id": "dst",
                    "instances": ["vm1", "vm2", "vm3"], "network_map": {"lan": "prod"},
                    "skip_os_morphing": True, "shutdown_instances": False,
                    "replication_count": 1, "notes": "n"}


def test_migration_form_bad_input_names_the_field() -> None:
    with pytest.raises(exceptions.InvalidInput, match="^network_map: not valid JSON"):
        migration_body(form(network_map='{"lan": '))
    with pytest.raises(exceptions.InvalidInput, match="^replication_count: must be a whole"):
        migration_body(form(replication_count="two"))
    with pytest.raises(ValidationError) as no_instances:
        migration_body(form(instances=" \n "))
    assert no_instances.value.errors()[0]["loc"] == ("instances",)
    with pytest.raises(ValidationError) as not_object:
        migration_body(form(destination_environment="[1]"))
    assert not_object.value.errors()[0]["loc"] == ("destination_environment",)


def test_execution_fragment_renders_bars_accessibly_and_escapes_text() -> None:
    execution = {"id": "e1", "status": "RUNNING", "number": 1, "type": "migration",
                 "action_id": "m1", "tasks": [task(
                     0, "REPLICATE_DISKS", "RUNNING", instance="<vm>",
                     progress_updates=[update(48 * MiB, 96 * MiB,
                                              "Disk d0: 48.0 of 96.0 MiB, 8.0 MiB/s")],
                     events=[{"index": 0, "level": "WARNING", "message": "<b>careful</b>",
                              "created_at": "2026-12-01T10:00:01.000000"}])]}
    html = _templates().get_template("_execution.html").render(
        execution=render.execution_view(execution))
    assert '<h2>&lt;vm&gt;</h2>' in html
    assert '<label for="bar-1-1">Disk d0</label>' in html
    assert ('<progress id="bar-1-1" max="100" value="50" data-kind="disk" '
            'aria-describedby="bar-1-1-text">') in html
    assert "50 % · 48.0 MiB of 96.0 MiB · 8.0 MiB/s · ETA 0:06" in html
    assert "&lt;b&gt;careful&lt;/b&gt;" in html and "<b>careful</b>" not in html
    assert 'hx-post="/dashboard/data/executions/e1/cancel"' in html  # running: cancellable
    assert 'role="status"' in html
    done = _templates().get_template("_execution.html").render(
        execution=render.execution_view({**execution, "status": "COMPLETED"}))
    assert "/cancel" not in done
