"""Search training recipes for the reference CNN with a float64 PyTorch replica (needs torch).

    python scripts/tune_recipe.py --check
    python scripts/tune_recipe.py --cost
    python scripts/tune_recipe.py --augment none shift --epochs 6 9 12 --lr 0.004 --seeds 0 1 2
    python scripts/tune_recipe.py --data-dir ../shared/data/mnist --epochs 3 --batch-size 8 16 --lr 0.002 0.004

The replica repeats the data-parallel trainer's arithmetic: ``nn.CNN.reference(seed)``'s initial
weights copied into torch, the same per-epoch shuffle (``epoch_order``), the same augmented inputs
(``AUGMENTATIONS[name]`` drawn from ``sample_rng(seed, epoch, index)``), the mean over the batch of
``pm1_mse_loss``, Adam with L2 weight decay as torch.optim.Adam computes it (which minigrad's Adam
reproduces) and the cosine schedule per step. Recipes that share epochs and batch size train
together as one stack of models (grouped convolutions), each with its own seed, augmentation,
learning rate and weight decay. ``--check`` trains a few steps both ways and prints the largest
parameter difference; trust the search only when it is ~1e-10 or less. Recipes are scored on the
1,000 held-out MNIST-5k digits (``load_mnist5k("test")``), or with ``--data-dir`` (the full MNIST)
trained on the first 50,000 training digits and scored on the last ``--validation`` 10,000: never
on the official test set. ``--final`` trains on all 60,000 and scores the official test set, for
a recipe already chosen.
``--cost`` prints what each augmentation adds to a training sample in the worker (CPU time, so
that other processes on the machine count less).
"""
import argparse
import itertools
import math
import sys
import time

import numpy as np
import torch

from minigrad.data import load_mnist5k
from minigrad.data.augment import AUGMENTATIONS
from minigrad.schedule import lr_at
from parallel.data_order import epoch_order
from minigrad.data.mnist_task import N_CLASSES, pm1_mse_loss, reference_model_fn
from parallel.replica import sample_rng

BETAS, EPS = (0.9, 0.999), 1e-8  # minigrad's and torch's Adam defaults


def stacked_parameters(seeds):
    """``nn.CNN.reference(seed)``'s tensors for each seed, stacked on a leading axis, in tensor order."""
    per_seed = [[np.reshape([p.v for p in values], shape) for _, shape, values in
                 reference_model_fn(seed)().named_tensors()] for seed in seeds]
    return [torch.tensor(np.stack(tensors)).requires_grad_() for tensors in zip(*per_seed)]


def forward(params, x):
    """Every model of the stack on its own inputs: x (batch, models, 15, 15) -> (batch, models, 10)."""
    w0, b0, w1, b1, wh, bh, wo, bo = params
    F, models = torch.nn.functional, w0.shape[0]
    h = torch.tanh(F.conv2d(x, w0.flatten(0, 1), b0.flatten(), stride=2, groups=models))
    h = torch.tanh(F.conv2d(h, w1.flatten(0, 1), b1.flatten(), stride=2, groups=models))
    h = torch.tanh(torch.einsum("bmi,moi->bmo", h.reshape(len(x), models, -1), wh) + bh)
    return torch.tanh(torch.einsum("bmi,moi->bmo", h, wo) + bo)


class StackedAdam:
    """torch.optim.Adam's single-tensor update, with a learning rate and weight decay per model."""

    def __init__(self, params, weight_decay):
        self.params, self.step_count = params, 0
        self.weight_decay = [torch.tensor(weight_decay, dtype=torch.float64).reshape(-1, *[1] * (p.dim() - 1))
                             for p in params]
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    def step(self, lrs):
        self.step_count += 1
        beta1, beta2 = BETAS
        step_size = torch.tensor([lr / (1 - beta1 ** self.step_count) for lr in lrs], dtype=torch.float64)
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** self.step_count)
        with torch.no_grad():
            for p, wd, m, v in zip(self.params, self.weight_decay, self.exp_avg, self.exp_avg_sq):
                grad = p.grad + wd * p
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / bias_correction2_sqrt).add_(EPS)
                p.sub_(step_size.reshape(-1, *[1] * (p.dim() - 1)) * (m / denom))
                p.grad = None


def epoch_inputs(images, augment, seed, epoch):
    """Every training input of ``epoch`` as the workers would compute it, shape (N, 1, 15, 15)."""
    if augment is None:
        return images
    return np.array([augment(images[i].tolist(), sample_rng(seed, epoch, i)) for i in range(len(images))])


def train(recipes, train_set, held_out, max_steps=None):
    """Train ``recipes`` (same epochs and batch size) side by side; return their held-out
    accuracies and final parameters (a list of numpy arrays per recipe)."""
    (epochs, batch_size), = {(r["epochs"], r["batch_size"]) for r in recipes}
    seeds = [r["seed"] for r in recipes]
    params = stacked_parameters(seeds)
    optimizer = StackedAdam(params, [r["weight_decay"] for r in recipes])
    n = len(train_set)
    total = epochs * -(-n // batch_size)
    total = total if max_steps is None else min(total, max_steps)
    targets = np.full((n, N_CLASSES), -1.0)
    targets[np.arange(n), train_set.labels] = 1.0
    step = 0
    for epoch in range(epochs):
        if step == total:
            break
        inputs, labels, shared = [], [], {}  # recipes with one seed and augmentation share their inputs
        for recipe in recipes:
            seed, augment = recipe["seed"], recipe["augment"]
            if (seed, augment) not in shared:
                order = epoch_order(n, seed, epoch)
                augmented = epoch_inputs(train_set.images, AUGMENTATIONS[augment], seed, epoch)
                shared[seed, augment] = augmented[order, 0], targets[order]
            inputs.append(shared[seed, augment][0])
            labels.append(shared[seed, augment][1])
        inputs, labels = torch.tensor(np.stack(inputs, 1)), torch.tensor(np.stack(labels, 1))
        for start in range(0, n, batch_size):
            if step == total:
                break
            outputs = forward(params, inputs[start:start + batch_size])
            ((outputs - labels[start:start + batch_size]) ** 2).mean(dim=(0, 2)).sum().backward()
            optimizer.step([lr_at("cosine", r["lr"], step, total) for r in recipes])
            step += 1
    with torch.no_grad():
        x = torch.tensor(held_out.images[:, 0])[:, None].expand(-1, len(recipes), -1, -1)
        predictions = forward(params, x).argmax(2).numpy()
    accuracies = (predictions == held_out.labels[:, None]).mean(0)
    return accuracies.tolist(), [[p[i].detach().numpy().ravel() for p in params] for i in range(len(recipes))]


def check(augments, steps=6):
    """For each augmentation (seeds 0, 1, ...), the largest difference between the replica's and
    minigrad's parameters after ``steps`` steps."""
    from parallel import DataParallelTrainer
    recipes = [{"seed": seed, "epochs": 1, "batch_size": 8, "lr": 0.004 * (1 + seed), "weight_decay": 1e-3 * seed,
                "augment": augment} for seed, augment in enumerate(augments)]
    train_set, held_out = load_mnist5k("train"), load_mnist5k("test")
    _, stacked = train(recipes, train_set, held_out, max_steps=steps)
    differences = []
    for recipe, replica in zip(recipes, stacked):
        with DataParallelTrainer(reference_model_fn(recipe["seed"]), pm1_mse_loss, optimizer="adam", lr=recipe["lr"],
                                 weight_decay=recipe["weight_decay"], lr_schedule="cosine", workers=0,
                                 seed=recipe["seed"], augment_fn=AUGMENTATIONS[recipe["augment"]]) as trainer:
            trainer.fit(train_set, epochs=1, batch_size=8, max_steps=steps)
            ours = np.array([p.v for _, _, values in trainer.model.named_tensors() for p in values])
        differences.append(float(np.abs(ours - np.concatenate(replica)).max()))
    return differences


def augmentation_cost(samples=100):
    """CPU seconds of one training sample (``Replica.compute``) and of its augmentation alone, per
    augmentation, measured in turns so that a change in the machine's load hits all alike."""
    from parallel.replica import Payload, Replica
    train_set = load_mnist5k("train")
    replicas = {name: Replica(Payload(reference_model_fn(0), pm1_mse_loss, augment_fn=fn))
                for name, fn in AUGMENTATIONS.items()}
    sample, augment = dict.fromkeys(AUGMENTATIONS, 0.0), dict.fromkeys(AUGMENTATIONS, 0.0)
    for replica in replicas.values():
        replica.add_dataset("train", train_set)
    for i in range(samples):
        x = train_set.images[i].tolist()
        for name, fn in AUGMENTATIONS.items():
            start = time.process_time()
            replicas[name].run_sample("train", "train", i, epoch=1)
            sample[name] += (time.process_time() - start) / samples
            start = time.process_time()
            if fn is not None:
                fn(x, sample_rng(0, 1, i))
            augment[name] += (time.process_time() - start) / samples
    return sample, augment


def splits(data_dir, validation, final):
    """(training set, the set it is scored on): MNIST-5k's, or the full MNIST's validation split."""
    if data_dir is None:
        return load_mnist5k("train"), load_mnist5k("test")
    from minigrad.data import Dataset, load_mnist
    train_set = load_mnist(data_dir, "train")
    if final:
        return train_set, load_mnist(data_dir, "test")
    if not 0 < validation < len(train_set):
        raise SystemExit(f"error: expected --validation between 1 and {len(train_set) - 1}, got {validation}")
    cut = len(train_set) - validation
    return (Dataset(train_set.images[:cut], train_set.labels[:cut], f"mnist-train[:{cut}]"),
            Dataset(train_set.images[cut:], train_set.labels[cut:], f"mnist-train[{cut}:] (validation)"))


def main(argv=None):
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare a few steps with minigrad and stop")
    p.add_argument("--cost", action="store_true", help="time each augmentation against a training sample and stop")
    p.add_argument("--augment", nargs="+", default=["none", "shift"], choices=sorted(AUGMENTATIONS))
    p.add_argument("--epochs", nargs="+", type=int, default=[6, 8, 9, 10, 12])
    p.add_argument("--lr", nargs="+", type=float, default=[0.004])
    p.add_argument("--batch-size", nargs="+", type=int, default=[8])
    p.add_argument("--weight-decay", nargs="+", type=float, default=[1e-3])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-steps", type=int, help="stop each recipe after this many steps (the schedule spans "
                   "them), as train_parallel.py's --max-steps")
    p.add_argument("--data-dir", help="the full MNIST's IDX files: search on its training set's validation split")
    p.add_argument("--validation", type=int, default=10_000, help="with --data-dir: the last training digits "
                   "held out to score on")
    p.add_argument("--final", action="store_true", help="with --data-dir: train on all training digits and score "
                   "the official test set (for a chosen recipe)")
    args = p.parse_args(argv)
    if args.check:
        for augment, difference in zip(args.augment, check(args.augment)):
            print(f"{augment}: largest parameter difference {difference:.3g}")
        return 0
    if args.cost:
        sample, augment = augmentation_cost()
        for name in AUGMENTATIONS:
            print(f"{name:<13} sample {1e3 * sample[name]:5.2f} ms, augmentation {1e6 * augment[name]:4.0f} us = "
                  f"{100 * augment[name] / sample['none']:.1f}% of a sample without")
        return 0
    train_set, held_out = splits(args.data_dir, args.validation, args.final)
    print(f"training on {len(train_set):,} digits, scored on {len(held_out):,} ({held_out.name})")
    print("augment       epochs  lr      batch  wd      " + "  ".join(f"seed {s}" for s in args.seeds)
          + "   mean  seconds", flush=True)
    for epochs, batch_size in itertools.product(args.epochs, args.batch_size):
        settings = list(itertools.product(args.augment, args.lr, args.weight_decay))
        recipes = [dict(augment=a, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=wd, seed=s)
                   for a, lr, wd in settings for s in args.seeds]
        start = time.perf_counter()
        accuracies, _ = train(recipes, train_set, held_out, args.max_steps)
        seconds = time.perf_counter() - start
        for k, (augment, lr, wd) in enumerate(settings):
            mine = accuracies[k * len(args.seeds):(k + 1) * len(args.seeds)]
            print(f"{augment:<13} {epochs:<7} {lr:<7g} {batch_size:<6} {wd:<7g} "
                  + "  ".join(f"{100 * a:6.2f}" for a in mine) + f"  {100 * np.mean(mine):5.2f}  {seconds:7.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
