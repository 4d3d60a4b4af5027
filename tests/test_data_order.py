"""The data order: each epoch a new shuffle of every sample, cut into batches, with a state that a
checkpoint carries; the shuffle itself is pinned, as old checkpoints depend on it."""
import pytest

from parallel.data_order import DataOrder, epoch_order


def test_data_order_epochs_batches_and_state():
    order = DataOrder(10, 4, seed=3)
    assert order.steps_per_epoch == 3
    seen = []
    for _ in range(3):
        seen.extend(order.next_batch())
        ended = order.advance()
    assert ended and sorted(seen) == list(range(10)) and order.epoch == 1
    assert order.order == epoch_order(10, 3, 1) != epoch_order(10, 3, 0)
    order.advance()
    copy = DataOrder(10, 4, seed=3)
    copy.load_state_dict(order.state_dict())
    assert copy.next_batch() == order.next_batch() == order.order[4:8]
    with pytest.raises(ValueError, match="batch_size"):
        DataOrder(10, 5, seed=3).load_state_dict(order.state_dict())


def test_epoch_order_is_pinned():
    # the shuffle is part of the checkpoint format: a change here breaks --resume of old runs
    assert epoch_order(10, 0, 0) == [5, 4, 3, 1, 9, 0, 2, 6, 7, 8]  # CPython 3.11 and PyPy 3.9 alike
