"""The simulated time line the simulator and the FEP share (``schemas.timeline``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.errors import ConfigurationError
from schemas.timeline import TimeLine

S = datetime(2026, 3, 1, tzinfo=UTC)


def test_runs_speed_times_faster_from_its_anchor() -> None:
    line = TimeLine(anchor=1000.0, start=S, speed=3600)
    assert line.at(1000.0) == S
    assert line.at(1001.0) == S + timedelta(hours=1)
    assert line.at(1000.5) == S + timedelta(minutes=30)
    assert line.at(999.0) == S - timedelta(hours=1)  # before the anchor: before the start
    assert line.speed_at(1500.0) == 3600


def test_slows_to_real_speed_from_until_without_a_jump() -> None:
    until = S + timedelta(days=1)
    line = TimeLine(anchor=0.0, start=S, speed=86_400, until=until)
    assert line.at(0.5) == S + timedelta(hours=12)
    assert line.at(1.0) == until  # the day took one real second
    assert line.at(1.0 + 10) == until + timedelta(seconds=10)  # then real time
    assert line.at(61.0) == until + timedelta(minutes=1)
    assert line.speed_at(0.5) == 86_400
    assert line.speed_at(2.0) == 1.0
    # continuous at the switch
    assert abs((line.at(1.0 + 1e-6) - line.at(1.0 - 1e-6)).total_seconds()) < 0.2


def test_rebased_is_the_same_line_in_another_time_base() -> None:
    line = TimeLine(anchor=50.0, start=S, speed=60, until=S + timedelta(hours=1))
    wall = line.rebased(1_700_000_000.0)
    for real in (50.0, 80.0, 110.0, 500.0):
        assert wall.at(real + 1_700_000_000.0) == line.at(real)


def test_file_form_round_trips() -> None:
    line = TimeLine(anchor=1_765_000_000.25, start=S, speed=1080.0,
                    until=S + timedelta(days=3))
    assert TimeLine.from_json(line.to_json()) == line
    plain = TimeLine(anchor=1.0, start=S, speed=2.0)
    assert TimeLine.from_json(plain.to_json()) == plain


@pytest.mark.parametrize(("text", "why"), [
    ("", "not a simulated time line"),
    ("[1, 2]", "expected a JSON object"),
    ('{"start": "2026-03-01T00:00:00+00:00", "speed": 2}', "missing anchor_unix_s"),
    ('{"anchor_unix_s": 1, "start": "2026-03-01T00:00:00", "speed": 2}', "time zone"),
    ('{"anchor_unix_s": 1, "start": "2026-03-01T00:00:00+00:00", "speed": 0}', "> 0"),
    ('{"anchor_unix_s": "x", "start": "2026-03-01T00:00:00+00:00", "speed": 2}', "float"),
    ('{"anchor_unix_s": 1, "start": "2026-03-01T00:00:00+00:00", "speed": 2, '
     '"until": "2026-02-01T00:00:00+00:00"}', "before its start"),
])
def test_a_bad_file_says_what_and_where(text: str, why: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        TimeLine.from_json(text, source="/run/clock.json")
    assert why in str(caught.value)
    assert caught.value.where == "/run/clock.json"
    assert caught.value.hint
    assert "fep.clock_file" in caught.value.hint
