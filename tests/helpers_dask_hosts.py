"""The trainer's side of tests/test_dask_hosts.py, run inside its own network namespace.

    python tests/helpers_dask_hosts.py SCHEDULER CA CERT KEY FOLDER STEPS

Trains the small model of test_dask.py on the Dask cluster at SCHEDULER over mutual TLS,
one JSON line per step on stdout: the step, its wall and engine seconds, the bytes this
namespace's eth0 sent and received during it, and the workers holding a replica. Before
step ``PAUSE_AT`` it waits for FOLDER/resume, so the test can add a host at a known point.
Ends with a line holding the parameters' sha256.
"""
import json
import os
import sys
import time

from test_dask import loss, small_data, small_model

PAUSE_AT = 8
SAMPLE_SECONDS = 0.02


def slow_loss(outputs, label):
    time.sleep(SAMPLE_SECONDS)  # steps long enough for a host to vanish in the middle of one
    return loss(outputs, label)


def eth0_bytes():
    stats = "/sys/class/net/eth0/statistics"
    return sum(int(open(os.path.join(stats, f)).read()) for f in ("tx_bytes", "rx_bytes"))


def make_trainer(loss_fn, **backend):
    from parallel import DataParallelTrainer
    return DataParallelTrainer(model_fn=small_model, loss_fn=loss_fn, optimizer="sgd", lr=0.05, momentum=0.9,
                               workers=2, seed=3, **backend)


def reference_sha256(steps):
    """The parameters after ``steps`` steps on the process pool."""
    with make_trainer(loss, backend="process") as trainer:
        for _ in trainer.train_steps(small_data(), epochs=1000, batch_size=6, max_steps=steps):
            pass
        return trainer.parameters_sha256()


def main(scheduler, ca, cert, key, folder, steps):
    with make_trainer(slow_loss, backend="dask", scheduler=scheduler, tls=(ca, cert, key)) as trainer:
        before = eth0_bytes()
        for report in trainer.train_steps(small_data(), epochs=1000, batch_size=6, max_steps=int(steps)):
            after = eth0_bytes()
            print(json.dumps({"step": report.step, "seconds": report.seconds, "engine": report.engine_seconds,
                              "bytes": after - before, "actors": sorted(trainer.backend.actors)}), flush=True)
            if report.step == PAUSE_AT - 1:
                while not os.path.exists(os.path.join(folder, "resume")):
                    time.sleep(0.1)
            before = eth0_bytes()
        print(json.dumps({"sha256": trainer.parameters_sha256()}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
