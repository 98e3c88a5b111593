"""Process-wide tuning of the long-running commands (``unimeter.process``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from unimeter.process import YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_collections_run_less_often() -> None:
    gc.unfreeze()
    made_before = [[] for _ in range(10)]  # objects alive at start-up
    tune_garbage_collector()
    assert gc.get_freeze_count() >= len(made_before)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 20, 100)
    # cycles made afterwards are still collected
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
