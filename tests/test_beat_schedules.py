"""The time math of periodic jobs, with fixed clocks: every crontab form, intervals, DST."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from jobs_beat import InvalidSchedule, clocked, crontab, interval
from jobs_beat.missed_runs import MISSED_AFTER, RUN_ONCE, SKIP, settle

BERLIN = ZoneInfo("Europe/Berlin")
#: A Monday.
MONDAY = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)


def runs(schedule, after: datetime, count: int) -> list[str]:
    """The next ``count`` due times after ``after``, as ISO strings with their offsets."""
    times = []
    for _ in range(count):
        after = schedule.next_run(after)
        times.append(after.isoformat())
    return times


def utc(*args) -> str:
    return datetime(*args, tzinfo=UTC).isoformat()


# The crontab forms Celery users write -----------------------------------------------------


def test_crontab_with_no_arguments_runs_every_minute():
    assert runs(crontab(), MONDAY, 3) == [utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 2),
                                          utc(2024, 1, 1, 0, 3)]


def test_every_fifteen_minutes():
    assert runs(crontab(minute="*/15"), MONDAY, 5) == [
        utc(2024, 1, 1, 0, 15), utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 0, 45),
        utc(2024, 1, 1, 1, 0), utc(2024, 1, 1, 1, 15)]


def test_every_three_hours_on_the_hour():
    assert runs(crontab(minute=0, hour="*/3"), MONDAY, 8) == [
        utc(2024, 1, 1, h) for h in (3, 6, 9, 12, 15, 18, 21)] + [utc(2024, 1, 2, 0)]


def test_a_list_of_hours():
    schedule = crontab(minute=0, hour="0,3,6,9,12,15,18,21")
    assert runs(schedule, MONDAY, 8) == runs(crontab(minute=0, hour="*/3"), MONDAY, 8)


def test_monday_at_half_past_seven():
    assert runs(crontab(hour=7, minute=30, day_of_week=1), MONDAY, 3) == [
        utc(2024, 1, 1, 7, 30), utc(2024, 1, 8, 7, 30), utc(2024, 1, 15, 7, 30)]


def test_sunday_is_day_zero():
    assert runs(crontab(minute=0, hour=0, day_of_week=0), MONDAY, 2) == [
        utc(2024, 1, 7), utc(2024, 1, 14)]


def test_weekdays_by_name_range():
    days = [datetime.fromisoformat(t).strftime("%a")
            for t in runs(crontab(minute=0, hour=9, day_of_week="mon-fri"), MONDAY, 7)]
    assert days == ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon", "Tue"]


def test_full_day_names_mean_their_abbreviations():
    schedule = crontab(minute=0, hour=9, day_of_week="Monday-Friday")
    assert schedule.day_of_week == "mon-fri"
    assert runs(schedule, MONDAY, 7) == runs(crontab(minute=0, hour=9, day_of_week="1-5"),
                                             MONDAY, 7)


def test_every_ten_minutes_in_three_hours_of_thursday_and_friday():
    schedule = crontab(minute="*/10", hour="3,17,22", day_of_week="thu,fri")
    first = runs(schedule, MONDAY, 7)
    assert first == [utc(2024, 1, 4, 3, m) for m in (0, 10, 20, 30, 40, 50)] + [
        utc(2024, 1, 4, 17, 0)]
    days = {datetime.fromisoformat(t).strftime("%a") for t in runs(schedule, MONDAY, 60)}
    assert days == {"Thu", "Fri"}


def test_positional_minute_and_hour_as_celery_takes_them():
    assert runs(crontab(0, 0, day_of_month="2"), MONDAY, 2) == [utc(2024, 1, 2),
                                                                 utc(2024, 2, 2)]
    assert runs(crontab("0", "1,7,13,19"), MONDAY, 4) == [
        utc(2024, 1, 1, h) for h in (1, 7, 13, 19)]


def test_every_even_day_of_the_month():
    days = [datetime.fromisoformat(t).day
            for t in runs(crontab(0, 0, day_of_month="2-30/2"), MONDAY, 16)]
    assert days == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 2]


def test_first_and_third_weeks_of_the_month():
    days = [datetime.fromisoformat(t).day
            for t in runs(crontab(0, 0, day_of_month="1-7,15-21"), MONDAY, 15)]
    assert days == [2, 3, 4, 5, 6, 7, 15, 16, 17, 18, 19, 20, 21, 1, 2]


def test_the_eleventh_of_may_every_year():
    assert runs(crontab(0, 0, day_of_month="11", month_of_year="5"), MONDAY, 2) == [
        utc(2024, 5, 11), utc(2025, 5, 11)]


def test_every_day_of_the_first_month_of_each_quarter():
    after = datetime(2024, 1, 31, 12, tzinfo=UTC)
    assert runs(crontab(0, 0, month_of_year="*/3"), after, 2) == [utc(2024, 4, 1),
                                                                   utc(2024, 4, 2)]
    months = {datetime.fromisoformat(t).month
              for t in runs(crontab(0, 0, month_of_year="*/3"), MONDAY, 366)}
    assert months == {1, 4, 7, 10}


def test_a_cron_line_means_its_five_fields():
    assert crontab("*/5 * * * *") == crontab(minute="*/5")
    assert crontab.from_string("30 7 * * 1") == crontab(hour=7, minute=30, day_of_week=1)
    assert runs(crontab("*/5 * * * *"), MONDAY, 2) == [utc(2024, 1, 1, 0, 5),
                                                        utc(2024, 1, 1, 0, 10)]


def test_day_of_month_and_day_of_week_together_must_both_match():
    # Celery's rule: the first Monday of each month (classic cron would take either).
    assert runs(crontab(0, 0, day_of_week="mon", day_of_month="1-7"), MONDAY, 3) == [
        utc(2024, 2, 5), utc(2024, 3, 4), utc(2024, 4, 1)]


def test_lists_of_numbers_are_accepted():
    assert crontab(minute=0, hour=[12, 0]).hour == "0,12"


@pytest.mark.parametrize("field, value", [
    ("minute", "61"), ("minute", "*/0"), ("hour", "24"), ("day_of_week", "8"),
    ("day_of_week", "someday"), ("day_of_month", "0"), ("month_of_year", "13"),
    ("minute", "1 2"), ("hour", ""), ("minute", True),
])
def test_a_bad_field_is_refused_naming_the_field(field, value):
    with pytest.raises(InvalidSchedule) as caught:
        crontab(**{field: value})
    assert list(caught.value.errors) == [field]
    assert repr(value) in caught.value.errors[field]


def test_a_date_that_never_exists_is_refused():
    with pytest.raises(InvalidSchedule, match="names no date that exists"):
        crontab(0, 0, day_of_month=30, month_of_year=2)


def test_a_cron_line_needs_five_fields():
    with pytest.raises(InvalidSchedule, match="five fields"):
        crontab.from_string("*/5 * * *")


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(InvalidSchedule) as caught:
        crontab(tz="Mars/Olympus")
    assert list(caught.value.errors) == ["timezone"]


def test_a_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="naive"):
        crontab().next_run(datetime(2024, 1, 1))


def test_the_time_zone_of_a_crontab_is_where_its_hours_are():
    schedule = crontab(hour=9, minute=0, tz="America/New_York")
    winter, summer = schedule.next_run(MONDAY), schedule.next_run(datetime(2024, 7, 1, tzinfo=UTC))
    assert winter.astimezone(UTC).isoformat() == utc(2024, 1, 1, 14)
    assert summer.astimezone(UTC).isoformat() == utc(2024, 7, 1, 13)


# Daylight saving time (Europe/Berlin: 2024-03-31 02:00 -> 03:00, 2024-10-27 03:00 -> 02:00) ----


def test_a_time_the_clocks_skip_runs_once_moved_on_by_the_gap():
    daily = crontab(hour=2, minute=30, tz="Europe/Berlin")
    assert runs(daily, datetime(2024, 3, 30, 12, tzinfo=BERLIN), 3) == [
        "2024-03-31T03:30:00+02:00",
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_a_time_the_clocks_repeat_runs_once_at_its_first_occurrence():
    daily = crontab(hour=2, minute=30, tz="Europe/Berlin")
    assert runs(daily, datetime(2024, 10, 26, 12, tzinfo=BERLIN), 2) == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]


def test_after_the_first_occurrence_the_repeated_time_does_not_run_again():
    daily = crontab(hour=2, minute=30, tz="Europe/Berlin")
    second_pass = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN, fold=1)
    assert daily.next_run(second_pass).isoformat() == "2024-10-28T02:30:00+01:00"


def test_an_hourly_schedule_stays_hourly_through_the_repeated_hour():
    hourly = crontab(minute=0, tz="Europe/Berlin")
    times = runs(hourly, datetime(2024, 10, 27, 0, 30, tzinfo=BERLIN), 5)
    assert times == ["2024-10-27T01:00:00+02:00", "2024-10-27T02:00:00+02:00",
                     "2024-10-27T02:00:00+01:00", "2024-10-27T03:00:00+01:00",
                     "2024-10-27T04:00:00+01:00"]
    assert _steps(times) == {timedelta(hours=1)}


def test_every_fifteen_minutes_stays_every_fifteen_minutes_of_real_time_through_dst():
    quarter = crontab(minute="*/15", tz="Europe/Berlin")
    spring = runs(quarter, datetime(2024, 3, 31, 1, 40, tzinfo=BERLIN), 3)
    assert spring == ["2024-03-31T01:45:00+01:00", "2024-03-31T03:00:00+02:00",
                      "2024-03-31T03:15:00+02:00"]
    autumn = runs(quarter, datetime(2024, 10, 27, 1, 40, tzinfo=BERLIN), 10)
    assert autumn[4:6] == ["2024-10-27T02:45:00+02:00", "2024-10-27T02:00:00+01:00"]
    assert _steps(spring) == _steps(autumn) == {timedelta(minutes=15)}


def test_times_only_in_the_repeated_hour_run_in_its_first_pass():
    schedule = crontab(minute="*/15", hour=2, tz="Europe/Berlin")
    assert runs(schedule, datetime(2024, 10, 27, 1, 0, tzinfo=BERLIN), 5) == [
        "2024-10-27T02:00:00+02:00", "2024-10-27T02:15:00+02:00",
        "2024-10-27T02:30:00+02:00", "2024-10-27T02:45:00+02:00",
        "2024-10-28T02:00:00+01:00"]


def _steps(times: list[str]) -> set[timedelta]:
    moments = [datetime.fromisoformat(t) for t in times]
    return {b - a for a, b in pairwise(moments)}


# Intervals and clocked times --------------------------------------------------------------


def test_an_interval_first_runs_one_interval_after_it_is_planned():
    assert interval(timedelta(seconds=10)).first_run(MONDAY) == MONDAY + timedelta(seconds=10)


def test_an_interval_with_a_future_start_first_runs_at_the_start():
    start = MONDAY + timedelta(hours=9)
    assert interval(hours=1).first_run(MONDAY, start) == start


def test_an_interval_with_a_past_start_keeps_to_the_start_grid():
    start = MONDAY + timedelta(hours=9)
    now = start + timedelta(hours=2, minutes=20)
    assert interval(hours=1).first_run(now, start) == start + timedelta(hours=3)


def test_after_a_late_run_an_interval_returns_to_its_grid():
    every = interval(minutes=1)
    due = MONDAY
    now = due + timedelta(hours=1, seconds=30)
    assert every.after_run(due, now) == due + timedelta(hours=1, minutes=1)
    assert every.after_run(due, due + timedelta(seconds=0.3)) == due + timedelta(minutes=1)


def test_intervals_read_as_words():
    assert interval(timedelta(seconds=10)).describe() == "every 10 seconds"
    assert interval(minutes=1).describe() == "every minute"
    assert interval(7200).describe() == "every 2 hours"


def test_an_interval_must_be_positive():
    with pytest.raises(InvalidSchedule):
        interval(timedelta(0))


def test_a_clocked_time_runs_once():
    at = MONDAY + timedelta(hours=5)
    once = clocked(at)
    assert once.next_run(MONDAY) == at
    assert once.next_run(at) is None
    assert once.after_run(at, at) is None


# The missed-run policy -----------------------------------------------------------------------


def test_a_due_time_reached_on_time_runs_and_the_next_follows():
    decision = settle(interval(minutes=1), MONDAY, MONDAY + timedelta(seconds=0.2))
    assert (decision.fire, decision.late) == (True, False)
    assert decision.next_run == MONDAY + timedelta(minutes=1)


def test_an_hour_of_missed_minutes_runs_once_not_sixty_times():
    now = MONDAY + timedelta(hours=1, seconds=5)
    decision = settle(interval(minutes=1), MONDAY, now, missed_runs=RUN_ONCE)
    assert (decision.fire, decision.late) == (True, True)
    assert decision.next_run == MONDAY + timedelta(hours=1, minutes=1)


def test_with_the_skip_policy_a_missed_run_is_not_run():
    now = MONDAY + timedelta(hours=1, seconds=5)
    decision = settle(crontab(minute=0), MONDAY, now, missed_runs=SKIP)
    assert decision.fire is False
    assert decision.next_run == MONDAY + timedelta(hours=2)


def test_with_the_skip_policy_a_slightly_late_run_still_runs():
    now = MONDAY + MISSED_AFTER - timedelta(seconds=1)
    assert settle(crontab(minute=0), MONDAY, now, missed_runs=SKIP).fire is True


def test_a_one_off_task_has_no_next_run_after_running():
    decision = settle(interval(minutes=1), MONDAY, MONDAY, one_off=True)
    assert (decision.fire, decision.next_run) == (True, None)


def test_a_due_time_past_the_end_does_not_run():
    decision = settle(interval(minutes=1), MONDAY, MONDAY, end=MONDAY - timedelta(seconds=1))
    assert (decision.fire, decision.expired, decision.next_run) == (False, True, None)


def test_the_last_run_before_the_end_has_no_next():
    end = MONDAY + timedelta(seconds=30)
    decision = settle(interval(minutes=1), MONDAY, MONDAY, end=end)
    assert (decision.fire, decision.next_run) == (True, None)


# In words -------------------------------------------------------------------------------------


def test_a_crontab_reads_as_words_with_its_time_zone():
    assert crontab(hour=7, minute=30, day_of_week=1, tz="Europe/Berlin").describe() == (
        "At 07:30, only on Monday (Europe/Berlin)")


def test_without_cron_descriptor_a_crontab_reads_as_its_cron_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cron_descriptor", None)
    assert crontab(hour=7, minute=30, day_of_week=1, tz="UTC").describe() == "30 7 * * 1 (UTC)"
