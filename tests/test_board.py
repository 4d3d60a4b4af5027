"""The board through which pool workers claim a step's samples themselves: the parent wakes once
per step whatever the batch size, nothing travels through the pipes per sample, the claim state
survives a worker killed anywhere (even holding the board's lock), and a half-written claim is
repaired by ``board.recover``."""
import multiprocessing
import os
import signal
import time

import pytest

from helpers_parallel import _bump, _count, tiny_dataset, tiny_loss, tiny_model_fn, tiny_trainer, train_sha, wait_gone
from parallel import Payload, ProcessBackend, board
from parallel.data_order import epoch_order
from parallel.replica import pack, tensor_order_parameters

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")


# ---- the claim state, in one process ----

@pytest.fixture
def shared_board():
    header, records = board.Header.create(3), board.Records.create(16)
    yield header, records
    header.release()
    records.release()


def publish(header, records, n=8):
    header.lock()
    try:
        board.publish(header, records, 1, "train", 0, list(range(100, 100 + n)), 0, 1)
    finally:
        header.unlock()


def test_claims_hand_out_each_position_once_and_the_last_done_says_so(shared_board):
    header, records = shared_board
    publish(header, records, n=5)
    a, b = board.Claims(header, 0), board.Claims(header, 1)
    taken, done, last = [], {0: None, 1: None}, []
    for _ in range(4):
        for claims, k in ((a, 0), (b, 1)):
            position, finished, _ = claims.next(records, done[k], 0)
            if finished is not None:
                last.append(finished)
            done[k] = position
            if position is not None:
                taken.append(position)
    assert sorted(taken) == [0, 1, 2, 3, 4]
    assert last == [1]  # the job's number, once, from whoever finished the fifth position
    assert header.words[board.FINISHED] == 5 and header.words[board.CLAIMED] == 5


def test_unread_messages_come_before_a_claim(shared_board):
    header, records = shared_board
    publish(header, records)
    header.words[header.slot(0, board.MESSAGES)] = 2
    claims = board.Claims(header, 0)
    assert claims.next(records, None, 1)[0] == -1  # one message not read yet: nothing claimed
    assert header.words[board.CLAIMED] == 0
    assert claims.next(records, None, 2)[0] == 0


@pytest.mark.parametrize("case", ["claimed, slot not written", "slot written", "done, not counted"])
def test_recover_puts_back_exactly_what_a_dead_worker_left(shared_board, case):
    header, records = shared_board
    publish(header, records, n=8)
    words = header.words
    live, dead = board.Claims(header, 0), board.Claims(header, 1)
    assert live.next(records, None, 0)[0] == 0  # the live worker computes position 0
    assert dead.next(records, None, 0)[0] == 1
    if case == "claimed, slot not written":  # killed between the counter and its heartbeat slot
        words[board.CLAIMED] = 3
    elif case == "done, not counted":  # killed between the done flag and the count
        records.done[1] = 1
    lost = board.recover(header, records, live=[0], tokens=0)
    assert lost == {"claimed, slot not written": [1, 2], "slot written": [1], "done, not counted": []}[case]
    assert words[board.FINISHED] == (1 if case == "done, not counted" else 0)
    # what was put back is claimed again, lowest first, and nothing twice
    again, held = [], 0
    for _ in lost:
        held = live.next(records, held, 0)[0]
        again.append(held)
    assert again == lost
    assert board.recover(header, records, live=[0], tokens=0) == []


def test_the_board_lock_goes_with_a_process_killed_while_holding_it(shared_board):
    header, _ = shared_board
    ctx = multiprocessing.get_context("forkserver")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_the_lock, args=(header.block.handle, ready))
    child.start()
    try:
        assert ready.wait(10)
        assert not header.try_lock()
        assert board.lock_holder(header.fd) == child.pid
        os.kill(child.pid, signal.SIGKILL)
        child.join(5)
        assert header.try_lock()  # the kernel released it
        header.unlock()
    finally:
        child.kill()
        child.join()


def _hold_the_lock(handle, ready):
    header = board.Header.attach(handle, 3)
    header.lock()
    ready.set()
    time.sleep(60)


# ---- the pool ----

def one_step(batch_size, workers=2):
    """The parent's wake-ups and the bytes the pipes carried during one training step (after a warm-up)."""
    data = tiny_dataset()
    params = pack([p.v for p in tensor_order_parameters(tiny_model_fn()())])
    with ProcessBackend(workers) as backend:
        backend.start(Payload(tiny_model_fn(), tiny_loss))
        backend.add_dataset("d", data)
        backend.run("train", params, "d", list(range(batch_size)))
        while not all(slot.ready for slot in backend._slots):  # every worker up, its Ready read
            backend.run("train", params, "d", list(range(batch_size)))
        backend.run("train", params, "d", list(range(batch_size)))
        wakeups, received, sent = backend.wakeups, backend.bytes_received, backend.bytes_sent
        backend.run("train", params, "d", list(range(batch_size)))
        return backend.wakeups - wakeups, backend.bytes_received - received, backend.bytes_sent - sent


def test_a_step_costs_the_parent_one_wake_up_and_no_message_per_sample():
    small, large = one_step(4), one_step(32)
    assert large[0] <= 2 and small[0] <= 2  # woken by the worker that finished the last position
    assert large[1] == small[1]  # the same bytes through the pipes for 32 samples as for 4
    assert large[2] == small[2] == 0


def test_a_worker_stopped_while_holding_the_board_lock_is_killed_and_its_sample_recomputed(tmp_path):
    """A worker stopped (SIGSTOP) inside the board's locked section blocks every other claim: the
    watchdog finds it by its heartbeat (or as the lock's holder), kills it, and the run goes on."""
    undisturbed, _ = train_sha(0, steps=4, batch_size=5)
    index = epoch_order(40, 0, 0)[5 + 2]  # position 2 of step 2
    lines = []
    start = time.monotonic()
    with tiny_trainer(2, log=lines.append, sample_timeout=1.0) as trainer:
        trainer.start(tiny_dataset())
        data = LockingDataset(tiny_dataset(), index, trainer.backend._header.block.handle.name,
                              str(tmp_path / "faults"))
        pids = trainer.backend.pids()
        trainer.fit(data, epochs=10, batch_size=5, max_steps=4)
        sha = trainer.parameters_sha256()
        pids += trainer.backend.pids()
    assert sha == undisturbed
    assert time.monotonic() - start < 15
    assert len(lines) == 1 and "sample timeout" in lines[0], lines
    assert wait_gone(pids, 5) == []


class LockingDataset:
    """``base``'s samples; reading sample ``index`` in a worker takes the board's lock and stops (once)."""

    def __init__(self, base, index, header_name, counter):
        self.base, self.index, self.header_name, self.counter = base, index, header_name, counter
        self.parent = os.getpid()

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.index and os.getpid() != self.parent and _count(self.counter) < 1:
            _bump(self.counter)
            import fcntl
            fd = os.open(f"/dev/shm/{self.header_name}", os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.kill(os.getpid(), signal.SIGSTOP)
        return self.base.images[i], self.base.labels[i]

    @property
    def labels(self):
        return self.base.labels


def test_workers_killed_at_random_moments_change_no_bit():
    """SIGKILLs at arbitrary moments (mid-sample, mid-claim, holding the lock, asleep): every claimed
    sample is recomputed exactly when its worker is gone, and the parameters are the same bits."""
    import random
    import threading
    steps, batch = 400, 5
    undisturbed, _ = train_sha(0, steps=steps, batch_size=batch)
    rng = random.Random(0)
    kills, stop = [], threading.Event()
    with tiny_trainer(3, max_crashes=1000) as trainer:
        trainer.start(tiny_dataset())

        def killer():
            while not stop.wait(rng.uniform(0.005, 0.05)):
                # a worker still starting is spared: kills faster than (PyPy's, loaded) start-ups would
                # leave no worker ever ready, which the pool rightly reports as a failure to start
                pids = [s.pid for s in trainer.backend._slots if s.ready and not s.dead]
                if pids:
                    victim = rng.choice(pids)
                    try:
                        os.kill(victim, signal.SIGKILL)
                        kills.append(victim)
                    except ProcessLookupError:
                        pass

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            trainer.fit(tiny_dataset(), epochs=100, batch_size=batch, max_steps=steps)
        finally:
            stop.set()
            thread.join()
        assert trainer.parameters_sha256() == undisturbed
        assert len(kills) >= 10 and trainer.backend.restarts >= 5
