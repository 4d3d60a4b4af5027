"""What the trainer may ask of every backend (``parallel.backend.Backend``), and the one rule every
pool backend keeps about a sample that keeps killing its worker (``SampleCrashes``)."""
import pytest

from helpers_parallel import tiny_dataset, tiny_trainer
from parallel.backend import Backend, InProcessBackend, SampleCrashes
from parallel.process_pool import ProcessBackend


def test_a_sample_stops_the_run_after_max_crashes_in_a_row_and_a_completion_clears_it():
    crashes = SampleCrashes(max_crashes=3)
    assert [crashes.crashed("train", 7) for _ in range(2)] == [1, 2]
    assert not crashes.limit_reached(2)
    crashes.completed("train", [7, 8])  # it completed (in a later step, say): no longer a suspect
    assert crashes.crashed("train", 7) == 1
    assert crashes.crashed("test", 7) == 1  # another dataset's sample 7 is another sample
    assert crashes.crashed("train", 7) == 2 and crashes.limit_reached(crashes.crashed("train", 7))


def test_the_count_is_checked():
    with pytest.raises(ValueError, match="Expected max_crashes to be a positive integer, got 0"):
        SampleCrashes(0)


def test_a_backend_that_offers_nothing_extra_has_the_declared_defaults():
    backend = InProcessBackend()
    assert backend.wait_seconds is None and backend.timeout("train") is None and backend.timeout("eval") is None
    assert backend.on_event is None and not backend.reports_events
    with tiny_trainer(0) as trainer:
        assert trainer.add_event_listener(print) is False  # it reports no events
        trainer.fit(tiny_dataset(), epochs=1, batch_size=5, max_steps=2)  # and trains without them


def test_the_pool_offers_all_of_it():
    assert issubclass(ProcessBackend, Backend) and ProcessBackend.reports_events
    with ProcessBackend(1, sample_timeout=5) as backend:
        assert backend.wait_seconds == 0.0 and backend.timeout("train") == 5
        assert isinstance(backend.crashes, SampleCrashes) and backend.crashes.max_crashes == 3
