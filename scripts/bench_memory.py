"""Memory of a pool holding a large dataset: each process's RSS and USS (psutil), with the dataset
in shared memory (how the pool sends a ``minigrad.data.Dataset``) and pickled to every worker.

    python scripts/bench_memory.py --data-dir ../shared/data/mnist --workers 8

The dataset is the MNIST training set's size, 60,000 preprocessed 15x15 digits: the files in
--data-dir, repeated until there are 60,000 (the official test set has 10,000). USS is the memory
a process alone holds; shared pages count in RSS but not in USS.
"""
import argparse
import sys
import warnings

MB = 1024 * 1024


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder of MNIST IDX files (the test split is read)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--digits", type=int, default=60000)
    return p.parse_args(argv)


class Pickled:
    """The same arrays, in a container the pool does not place in shared memory."""

    def __init__(self, dataset):
        self.images, self.labels = dataset.images, dataset.labels

    def __len__(self):
        return len(self.labels)


def measure(dataset, workers):
    import psutil

    from minigrad import nn
    from minigrad.losses import mse_loss, one_hot_pm1
    from parallel import DataParallelTrainer
    with DataParallelTrainer(lambda: nn.CNN.reference(seed=0), lambda out, y: mse_loss(out, one_hot_pm1(y, 10)),
                             workers=workers, lr=0.01) as trainer:
        trainer.fit(dataset, epochs=1, batch_size=8, max_steps=2 * workers)
        info = [psutil.Process(pid).memory_full_info() for pid in trainer.backend.pids()]
        parent = psutil.Process().memory_full_info()
    return {"parent_rss": parent.rss / MB, "parent_uss": parent.uss / MB,
            "worker_rss": sum(i.rss for i in info) / len(info) / MB,
            "worker_uss": sum(i.uss for i in info) / len(info) / MB,
            "total_uss": (parent.uss + sum(i.uss for i in info)) / MB}


def main(argv=None):
    args = parse_args(argv)
    import numpy as np

    from minigrad.data import Dataset, load_mnist
    warnings.simplefilter("ignore", RuntimeWarning)
    test = load_mnist(args.data_dir, "test")
    repeat = -(-args.digits // len(test))
    images = np.concatenate([test.images] * repeat)[:args.digits]
    labels = np.concatenate([test.labels] * repeat)[:args.digits]
    dataset = Dataset(images, labels, "mnist-sized")
    print(f"{len(dataset)} digits, {images.nbytes / MB:.0f} MB of float64 pixels, {args.workers} workers")
    print(f"{'dataset':>14} {'parent RSS':>10} {'parent USS':>10} {'worker RSS':>10} {'worker USS':>10} "
          f"{'all USS':>9}  (MB; worker: mean)")
    for name, data in (("shared memory", dataset), ("pickled", Pickled(dataset))):
        m = measure(data, args.workers)
        print(f"{name:>14} {m['parent_rss']:>10.0f} {m['parent_uss']:>10.0f} {m['worker_rss']:>10.0f} "
              f"{m['worker_uss']:>10.0f} {m['total_uss']:>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
