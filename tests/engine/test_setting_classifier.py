"""The setting classifier's outages: counted, backed off, retried, reported; never off for good."""

from __future__ import annotations

import warnings

import pytest
import torch

from flexcache.engine import setting_classifier as sc

WEIGHTS = {
    "classes": list(sc.CLASSES),
    "dim": 3,
    "weights": [[12.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 12.0]],
    "bias": [0.0, 0.0, 0.0, 0.0],
}


class FlakyEmbedder:
    """Fails its first `failures` calls, then says every phrase is a place; counts calls."""

    dim = 3

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def embed(self, texts):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"out of memory (call {self.calls})")
        return torch.tensor([[1.0, 0.0, 0.0]] * len(texts))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def flaky(failures: int, **options):
    clock = FakeClock()
    embedder = FlakyEmbedder(failures)
    classifier = sc.SettingClassifier(embedder=embedder, weights=WEIGHTS, memory={}, clock=clock,
                                      retry_initial_s=5.0, retry_max_s=40.0, **options)
    return classifier, embedder, clock


def test_a_failure_backs_off_then_the_classifier_is_tried_again_and_recovers():
    classifier, embedder, clock = flaky(failures=1)
    with pytest.warns(RuntimeWarning, match="trying again in 5 s"):
        assert classifier.classify(["zorp"]) == [None]
    state = classifier.state()
    assert state["failing"] and state["failures"] == 1 and "out of memory" in state["last_error"]
    assert state["retry_in_s"] == pytest.approx(5.0)
    assert not classifier.available
    assert classifier.classify(["zorp"]) == [None] and embedder.calls == 1  # backing off: not called
    clock.now += 5.0
    assert classifier.available
    verdict = classifier.verdict("zorp")
    assert verdict is not None and verdict.label == "place" and embedder.calls == 2
    assert classifier.state() == {"failing": False, "failures": 1, "consecutive_failures": 0, "last_error": None,
                                  "retry_in_s": None}


def test_the_back_off_doubles_per_failure_in_a_row_up_to_its_bound_and_warns_once():
    classifier, embedder, clock = flaky(failures=100)
    with pytest.warns(RuntimeWarning):
        classifier.classify(["zorp"])
    waits = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later failures of the same outage are logged, not warned
        for _ in range(5):
            waits.append(classifier.state()["retry_in_s"])
            clock.now += waits[-1]
            assert classifier.classify(["zorp"]) == [None]
    waits.append(classifier.state()["retry_in_s"])
    assert waits == [5.0, 10.0, 20.0, 40.0, 40.0, 40.0]
    assert classifier.state()["failures"] == embedder.calls == 6


def test_a_model_that_fails_to_load_is_loaded_again_after_the_back_off():
    class LoadsSecondTime:
        def __init__(self) -> None:
            self.loads = 0

        @property
        def dim(self):
            self.loads += 1
            if self.loads == 1:
                raise OSError("model files missing")
            return 3

        def embed(self, texts):
            return torch.tensor([[0.0, 1.0, 0.0]] * len(texts))

    clock = FakeClock()
    embedder = LoadsSecondTime()
    classifier = sc.SettingClassifier(embedder=embedder, weights=WEIGHTS, memory={}, clock=clock)
    with pytest.warns(RuntimeWarning, match="model files missing"):
        assert classifier.verdict("vorble") is None
    assert classifier.failing and classifier.state()["consecutive_failures"] == 1
    clock.now += sc.RETRY_INITIAL_S
    assert classifier.verdict("vorble").label == "style"
    assert not classifier.failing and embedder.loads == 2
