from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datasette_forensics.timeparse import TimeError, format_ms, parse_time, parse_time_local

# 2020-07-18T09:12:44Z
T = 1595063564000
HOUR = 3_600_000
MINUTE = 60_000


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2020-07-18T09:12:44Z", T),
        ("2020-07-18T09:12:44z", T),
        ("2020-07-18T09:12:44", T),  # no offset: UTC
        ("2020-07-18 09:12:44", T),
        ("2020-07-18 09:12:44+02:00", T - 2 * HOUR),
        ("2020-07-18T09:12:44+0200", T - 2 * HOUR),
        ("2020-07-18T09:12:44+02", T - 2 * HOUR),
        ("2020-07-18T09:12:44+0530", T - 5 * HOUR - 30 * MINUTE),
        ("2020-07-18T09:12:44+05:30", T - 5 * HOUR - 30 * MINUTE),
        ("2020-07-18T09:12:44-0930", T + 9 * HOUR + 30 * MINUTE),
        ("2020-07-18T09:12:44.123Z", T + 123),
        ("2020-07-18T09:12:44,5Z", T + 500),
        ("2020-07-18T09:12:44.123456Z", T + 123),
        ("2020-07-18T09:12:44.1235Z", T + 124),  # half to even: 123.5 -> 124
        ("2020-07-18T09:12:44.1225Z", T + 122),  # half to even: 122.5 -> 122
        ("2020-07-18T09:12:44.9999Z", T + 1000),  # rounds into the next second
        ("2020-07-18T09:12:44.12250001Z", T + 123),  # above the half
        ("2020-07-18T09:12:44." + "1" * 5000 + "Z", T + 111),
        ("2020-07-18T09:12Z", T - 44_000),
        ("2020-07-18", 1595030400000),
        ("  2020-07-18T09:12:44Z  ", T),
    ],
)
def test_iso8601(value, expected):
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    "value,expected",
    [
        ("18/Jul/2020:09:12:44 +0000", T),
        ("[18/Jul/2020:09:12:44 +0000]", T),
        ("18/Jul/2020:09:12:44 +0330", T - 3 * HOUR - 30 * MINUTE),
        ("18/Jul/2020:09:12:44 -0400", T + 4 * HOUR),
        ("18/Jul/2020:09:12:44 +0530", T - 5 * HOUR - 30 * MINUTE),
        ("18/Jul/2020:09:12:44 -0930", T + 9 * HOUR + 30 * MINUTE),
        ("18/Jul/2020:09:12:44 +05:30", T - 5 * HOUR - 30 * MINUTE),
        ("18/Jul/2020:09:12:44", T),  # no offset: UTC
        ("18/jul/2020:09:12:44 +0000", T),
        ("8/Jul/2020:09:12:44 +0000", T - 10 * 86_400_000),
        ("18/Jul/2020:09:12:44.250 +0000", T + 250),
        ("01/Aug/1995:00:00:01 -0400", 807249601000),
        ("29/Feb/2020:00:00:00 +0000", 1582934400000),
    ],
)
def test_time_local(value, expected):
    assert parse_time(value) == expected


def test_time_local_fast_path_agrees_with_datetime():
    # Same minute twice (the cached path), then other seconds of it.
    for second in (44, 44, 0, 59, 7):
        text = f"18/Jul/2020:09:12:{second:02d} +0330"
        expected = datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp() * 1000
        assert parse_time_local(text) == expected
        assert parse_time(text) == expected


def test_time_local_cache_does_not_accept_a_bad_second():
    assert parse_time_local("18/Jul/2020:09:12:44 +0000") == T
    for bad in ("18/Jul/2020:09:12:60 +0000", "18/Jul/2020:09:12:4x +0000", "18/Jul/2020:09:12-44 +0000"):
        with pytest.raises(TimeError):
            parse_time_local(bad)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2199, 1, 1)), st.integers(-14 * 60, 14 * 60))
def test_time_local_matches_strptime(moment, offset_minutes):
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = moment.strftime("%d/%b/%Y:%H:%M:%S") + f" {sign}{hours:02d}{minutes:02d}"
    expected = int(datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp()) * 1000
    assert parse_time_local(text) == expected


@pytest.mark.parametrize(
    "value,expected",
    [
        (1595063564, T),
        (1595063564.123, T + 123),
        (1595063564.5, T + 500),
        ("1595063564", T),
        ("1595063564.123", T + 123),
        ("1595063564.1235", T + 124),
        ("1595063564.", T),
        (0, 0),
        ("0" * 5000 + "1", 1000),  # leading zeros: no huge int()
    ],
)
def test_epoch_seconds(value, expected):
    assert parse_time(value) == expected


def test_epoch_float_rounds_via_milliseconds():
    assert parse_time(1716723772.6014807) == round(1716723772.6014807 * 1000) == 1716723772601


@pytest.mark.parametrize(
    "value,reason",
    [
        (None, "no time"),
        ("", "empty"),
        ("   ", "empty"),
        (True, "not a time"),
        (False, "not a time"),
        ("yesterday", "not a recognised time"),
        ("2020-07-18T09:12:44 UTC", "not a recognised time"),
        ("18/Jul/2020 09:12:44", "not a recognised time"),
        ("32/Jul/2020:09:12:44 +0000", "out of range"),
        ("31/Jun/2020:09:12:44 +0000", "out of range"),
        ("18/Jux/2020:09:12:44 +0000", "unknown month"),
        ("18/Jul/2020:25:12:44 +0000", "out of range"),
        ("2020-02-30", "out of range"),
        ("2020-07-18T09:60:00Z", "out of range"),
        ("2020-07-18T09:12:44+2500", "offset out of range"),
        ("0001-01-01", "before 1970"),
        ("9999-12-31T23:59:59Z", "after 2200"),
        (1595063564123, "after 2200"),  # milliseconds passed as seconds
        ("-5", "not a recognised time"),
        (-5, "before 1970"),
        (float("nan"), "not a time"),
        (float("inf"), "not a time"),
        (b"2020-07-18", "not a time"),
        ("1e9", "not a recognised time"),
        ("9" * 5000, "after 2200"),  # never int() a huge digit string
        (1e308, "after 2200"),
    ],
)
def test_refusals(value, reason):
    with pytest.raises(TimeError) as info:
        parse_time(value)
    assert reason in str(info.value)


def test_time_error_is_a_value_error():
    assert issubclass(TimeError, ValueError)


@pytest.mark.parametrize(
    "ms,text",
    [
        (T, "2020-07-18T09:12:44.000Z"),
        (T + 7, "2020-07-18T09:12:44.007Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (807249601999, "1995-08-01T04:00:01.999Z"),
    ],
)
def test_format_ms(ms, text):
    assert format_ms(ms) == text
    assert parse_time(text) == ms


@given(st.integers(0, 7_258_118_399_999))
def test_format_ms_round_trips_and_sorts(ms):
    text = format_ms(ms)
    assert len(text) == 24
    assert parse_time(text) == ms
    assert (format_ms(ms) < format_ms(ms + 1)) and text == datetime.fromtimestamp(
        ms // 1000, timezone.utc
    ).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@given(st.text(max_size=60))
def test_only_time_error_for_any_text(text):
    try:
        ms = parse_time(text)
    except TimeError:
        return
    assert 0 <= ms < 7_289_654_400_000  # 2201-01-01
