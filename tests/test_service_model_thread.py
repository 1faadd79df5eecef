"""service.on_model_thread: one thread for all model work, whoever calls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fracturescan.service import on_model_thread


def _name() -> str:
    return threading.current_thread().name


def test_calls_from_many_threads_all_run_on_one_model_thread() -> None:
    with ThreadPoolExecutor(4) as callers:
        names = list(callers.map(lambda _: on_model_thread(_name), range(12)))
    assert len(set(names)) == 1 and names[0].startswith("fracturescan-model")
    assert on_model_thread(_name) == names[0] != _name()


def test_work_is_serialised() -> None:
    """Never two calls at once on the model (heatmap hooks sit on the shared model)."""
    active, peak, lock = [0], [0], threading.Lock()

    def work() -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        threading.Event().wait(0.01)
        with lock:
            active[0] -= 1

    with ThreadPoolExecutor(6) as callers:
        list(callers.map(lambda _: on_model_thread(work), range(12)))
    assert peak[0] == 1


def test_a_nested_call_runs_directly_and_errors_reach_the_caller() -> None:
    assert on_model_thread(lambda: on_model_thread(_name)).startswith("fracturescan-model")

    def fail() -> None:
        raise ValueError("bad image")

    with pytest.raises(ValueError, match="bad image"):
        on_model_thread(fail)
