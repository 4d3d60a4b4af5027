"""Memory: the workers' resident memory is reported, and neither the parent's nor a worker's grows
over 20,000 samples."""
import platform

import pytest

from helpers_parallel import tiny_dataset, tiny_trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")


def test_worker_memory_is_reported():
    with tiny_trainer(2) as trainer:
        trainer.fit(tiny_dataset(), epochs=1, batch_size=4, max_steps=1)
        memory = trainer.backend.memory()
    assert len(memory) == 2 and all(m > 1_000_000 for m in memory)


@pytest.mark.slow
def test_memory_stays_flat_over_20000_samples():
    from parallel.run.memory import MB, MemoryMonitor
    data = tiny_dataset(n=400)
    with tiny_trainer(2, lr=0.01) as trainer:
        monitor = MemoryMonitor(trainer.backend)
        for report in trainer.train_steps(data, epochs=50, batch_size=8):
            if report.step == 625:  # warmed up (PyPy's JIT too): 5,000 samples in
                start = monitor.read(force=True)
        end = monitor.read(force=True)
        assert trainer.step * 8 == 20000
    growth = [(e - s) / MB for s, e in zip([start[0]] + start[1], [end[0]] + end[1])]
    # PyPy's RSS keeps rising for a while as its JIT compiles and its GC sizes the heap, then
    # levels off; a leak of one gradient per sample would still add 20,000 x 43 kB = 860 MB.
    limit = 5 if platform.python_implementation() == "CPython" else 200
    assert max(growth) < limit, f"RSS growth (MB) of parent and workers: {growth}"
