"""WorkflowSchedules on a fake clock: due times, missed and overlapping ones, the
concurrency policies, the starting deadline, suspend, history limits, time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from braid.api.schedule import WorkflowScheduleSpec
from braid.engine.schedules import ScheduledRun, decide, due_times, run_name

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


def spec(**kw: Any) -> WorkflowScheduleSpec:
    return WorkflowScheduleSpec.model_validate(
        {
            "schedules": ["0 9 * * 1-5"],
            "runTemplate": {"spec": {"workflowRef": {"name": "wf"}}},
            **kw,
        }
    )


def test_nothing_is_due_before_the_first_time_and_the_next_is_said():
    d = decide("nightly", spec(), None, T0, [], T0 + timedelta(minutes=30))
    assert d.start is None
    assert d.next_schedule_time == T0.replace(hour=9)


def test_the_time_that_came_starts_one_run_named_by_it():
    now = T0.replace(hour=9, second=3)
    d = decide("nightly", spec(), None, T0, [], now)
    assert d.start == (run_name("nightly", T0.replace(hour=9)), T0.replace(hour=9))
    assert d.last_schedule_time == T0.replace(hour=9)
    assert d.next_schedule_time == T0.replace(day=3, hour=9)
    # deciding again at the same time (a retried reconcile) finds nothing new
    again = decide("nightly", spec(), d.last_schedule_time, T0, [], now)
    assert again.start is None


def test_missed_times_start_only_the_latest_and_say_so():
    # the operator was down from Monday 8:00 to Thursday 10:00
    now = T0 + timedelta(days=3, hours=2)
    d = decide("nightly", spec(), None, T0, [], now)
    assert d.start is not None
    assert d.start[1] == T0.replace(day=5, hour=9)
    assert "3 earlier missed time(s) skipped" in (d.message or "")


def test_a_time_missed_by_more_than_the_starting_deadline_is_skipped():
    now = T0.replace(hour=9, minute=10)
    d = decide("nightly", spec(startingDeadlineSeconds=300), None, T0, [], now)
    assert d.start is None
    assert "missed by more than 300s" in (d.message or "")
    assert d.last_schedule_time == T0.replace(hour=9)  # and not tried again


RUNNING = [ScheduledRun("nightly-1", "Running", "2026-03-01T09:00:00Z")]


@pytest.mark.parametrize(
    ("policy", "starts", "cancels"),
    [("Allow", True, ()), ("Forbid", False, ()), ("Replace", True, ("nightly-1",))],
)
def test_overlapping_runs_follow_the_concurrency_policy(policy, starts, cancels):
    now = T0.replace(hour=9)
    d = decide("nightly", spec(concurrencyPolicy=policy), None, T0, RUNNING, now)
    assert (d.start is not None) == starts
    assert d.cancel == cancels
    if policy == "Forbid":
        assert "nightly-1 is still running (Forbid)" in (d.message or "")


def test_suspended_starts_nothing_but_history_is_still_trimmed():
    runs = [
        ScheduledRun(f"r{i}", "Succeeded" if i % 2 else "Failed", f"2026-03-0{i}T09:00:00Z")
        for i in range(1, 8)
    ]
    d = decide("nightly", spec(suspend=True), None, T0, runs, T0 + timedelta(days=2))
    assert d.start is None
    assert d.message == "suspended"
    # 3 successes and 1 failure kept, newest first: r7, r5, r3 and r6
    assert sorted(d.delete) == ["r1", "r2", "r4"]


def test_seconds_and_time_zones():
    every = spec(schedules=["*/10 * * * * *"])
    assert due_times(every, T0, T0 + timedelta(seconds=35)) == [
        T0 + timedelta(seconds=s) for s in (10, 20, 30)
    ]
    paris = spec(timezone="Europe/Paris")  # 9:00 in Paris is 8:00 UTC in March
    d = decide("nightly", paris, None, T0 - timedelta(hours=1), [], T0 + timedelta(seconds=1))
    assert d.start is not None
    assert d.start[1].astimezone(UTC) == T0


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ({"schedules": ["61 * * * *"]}, "not a valid cron expression"),
        ({"schedules": ["* * *"]}, "5 fields"),
        ({"timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"runTemplate": {"spec": {}}}, "exactly one of workflowRef or workflow"),
    ],
)
def test_bad_specs_name_what_is_wrong(edit, says):
    with pytest.raises(ValidationError) as err:
        spec(**edit)
    assert says in str(err.value)
