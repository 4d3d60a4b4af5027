"""Which samples each step trains on: a fresh shuffle per epoch, fixed by the seed.

The order of epoch ``e`` comes from ``random.Random(f"minigrad-epoch:{seed}:{e}")`` (a
string seed is hashed with SHA-512, the same on every Python), so the whole data order
is a function of the seed; a checkpoint still stores the current epoch's order, and
the position in it, so a resumed run continues with the very next sample.
"""
import random

from minigrad.checks import int_at_least, positive_int


def epoch_order(n, seed, epoch):
    order = list(range(n))
    random.Random(f"minigrad-epoch:{seed}:{epoch}").shuffle(order)
    return order


class DataOrder:
    """Batches of sample indices, epoch after epoch; advances only when a step commits."""

    def __init__(self, n, batch_size, seed):
        positive_int("dataset size", n)
        positive_int("batch_size", batch_size)
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.position = 0, 0
        self.order = epoch_order(n, seed, 0)

    @property
    def steps_per_epoch(self):
        return -(-self.n // self.batch_size)

    def next_batch(self):
        """The indices of the next step (the last batch of an epoch may be smaller)."""
        return self.order[self.position:self.position + self.batch_size]

    def advance(self):
        """Commit the batch; return True when it finished an epoch."""
        self.position = min(self.position + self.batch_size, self.n)
        if self.position < self.n:
            return False
        self.epoch += 1
        self.position = 0
        self.order = epoch_order(self.n, self.seed, self.epoch)
        return True

    def state_dict(self):
        return {"seed": self.seed, "n": self.n, "batch_size": self.batch_size,
                "epoch": self.epoch, "position": self.position, "order": list(self.order)}

    def load_state_dict(self, state):
        """Continue from ``state_dict()``; the dataset size and batch size must match."""
        if not isinstance(state, dict):
            raise ValueError(f"Expected a data order state dict, got {type(state).__name__}")
        for key in ("n", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise ValueError(f"Expected data order {key} {getattr(self, key)}, got {state.get(key)!r}")
        order, position, epoch = state.get("order"), state.get("position"), state.get("epoch")
        if not isinstance(order, list) or sorted(order) != list(range(self.n)):
            raise ValueError(f"Expected the data order to be a permutation of range({self.n})")
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < self.n:
            raise ValueError(f"Expected a data position in [0, {self.n}), got {position!r}")
        int_at_least("data epoch", epoch, 0)
        self.seed, self.epoch, self.position, self.order = state.get("seed"), epoch, position, list(order)
