"""The same parameter bits for any worker count (0: in the parent), batch-size change or augmentation, equal
to a plain loop's, which adds the gradients in batch order. (Dask's bits against the pool's: test_dask.py.)"""
import numpy as np
import pytest

from helpers_parallel import tiny_dataset, tiny_loss, tiny_model, train_sha
from minigrad import checkpoint
from minigrad.data.augment import AUGMENTATIONS
from minigrad.optimizer import SGD
from parallel.data_order import DataOrder

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")


def reference_run(steps, batch_size, lr=0.05, momentum=0.9, seed=0, pairwise=False):
    """The trainer's arithmetic written out plainly: one model, samples one by one,
    gradients summed in batch order (or as a tree of pairs), averaged, engine SGD with
    a cosine schedule."""
    from minigrad.schedule import lr_at
    data = tiny_dataset()
    model = tiny_model(seed)
    params = model.parameters()
    opt = SGD(params, lr=lr, momentum=momentum)
    order = DataOrder(len(data), batch_size, seed)
    for step in range(steps):
        batch = order.next_batch()
        grads = []
        for i in batch:
            model.zero_grad()
            tiny_loss(model(data.images[i].tolist()), int(data.labels[i])).backward()
            grads.append(np.array([p.grad for p in params]))
        while pairwise and len(grads) > 1:
            grads = [grads[k] + grads[k + 1] if k + 1 < len(grads) else grads[k] for k in range(0, len(grads), 2)]
        total = grads[0]
        for g in grads[1:]:
            total = total + g
        total /= len(batch)
        for p, g in zip(params, total.tolist()):
            p.grad = g
        opt.lr = lr_at("cosine", lr, step, steps)
        opt.step()
        order.advance()
    return checkpoint.parameters_sha256(model)


@pytest.mark.parametrize("workers,steps,batch_size", [
    # batch 5 over 40 samples: uneven chunks for 2, 3 and 8 workers, and an epoch boundary
    *[(workers, 10, 5) for workers in (0, 1, 2, 3, 8)],
    *[(workers, 8, 7) for workers in (0, 1, 2, 3, 8)],
    # batch 7 over 40 samples: the last batch of each epoch has 5, then full batches again, so the
    # gradient slab is grown back
    *[(workers, 14, 7) for workers in (0, 2)],
])
def test_same_parameters_bits_for_any_worker_count(workers, steps, batch_size):
    sha, restarts = train_sha(workers, steps=steps, batch_size=batch_size)
    assert sha == reference_run(steps=steps, batch_size=batch_size)
    assert restarts == 0


def test_summation_order_changes_the_bits():
    # what the test above guards against: a grouping that depends on the worker count
    assert reference_run(steps=10, batch_size=5, pairwise=True) != reference_run(steps=10, batch_size=5)


def test_the_reduction_adds_rows_one_after_another_as_a_loop():
    from parallel.trainer import sum_rows
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 8, 33):
        rows = rng.normal(size=(n, 257)) * 10.0 ** rng.integers(-12, 12, size=(n, 1))
        rows[rng.random(rows.shape) < 0.05] = -0.0
        rows[:, 0] = [1e16, 1.0, -1e16] * (n // 3) + [1.0] * (n % 3)  # order-sensitive: (1e16 + 1) - 1e16
        loop = np.zeros(rows.shape[1])
        for row in rows:
            loop += row
        assert sum_rows(rows).tobytes() == loop.tobytes()


@pytest.mark.parametrize("name", ["shift", "elastic"])
def test_augmented_training_is_bit_identical_for_workers_0_1_2_8(name):
    shas = [train_sha(workers, steps=12, batch_size=5, augment_fn=AUGMENTATIONS[name])[0]
            for workers in (0, 1, 2, 8)]
    assert len(set(shas)) == 1
    assert shas[0] != train_sha(0, steps=12, batch_size=5)[0], "the augmentation changed nothing"
