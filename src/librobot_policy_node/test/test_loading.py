import threading
import time

from librobot_policy_node.loading import BackgroundLoader


def test_loads_in_the_background_and_hands_the_result_over_once():
    gate = threading.Event()
    loader = BackgroundLoader(lambda key: gate.wait(5.0) and f"model {key}")
    loader.request("a")
    assert loader.busy and loader.take() is None  # the caller keeps going meanwhile
    gate.set()
    loader.join(5.0)
    assert loader.take() == ("a", "model a") and loader.take() is None
    assert not loader.busy


def test_of_requests_made_during_a_load_only_the_newest_is_served():
    started, gate, loaded = threading.Event(), threading.Event(), []

    def load(key):
        started.set()
        gate.wait(5.0)
        loaded.append(key)
        return key

    loader = BackgroundLoader(load)
    loader.request("a")
    started.wait(5.0)
    loader.request("b")
    loader.request("c")
    gate.set()
    deadline = time.monotonic() + 5.0
    while loader.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loaded == ["a", "c"] and loader.take() == ("c", "c")


def test_a_failed_load_returns_the_exception():
    def load(key):
        raise ValueError(f"{key}: not a checkpoint")

    loader = BackgroundLoader(load)
    loader.request("x")
    loader.join(5.0)
    key, result = loader.take()
    assert key == "x" and isinstance(result, ValueError) and "not a checkpoint" in str(result)
