"""The bits of minigrad's arithmetic, stage by stage, as one JSON object of SHA-256 digests.

    python tests/same_bits_probe.py [--compensated-sum]

What ``test_same_bits.py`` compares across interpreters, BLAS kernels and libm code paths:
the portable functions on fixed inputs, the preprocessed digits (the resize), augmentations,
one sample's gradients (fused and op by op, MSE and cross-entropy), a few training steps with
Adam and a cosine schedule and with SGD and a step schedule, and an evaluation. With
``--compensated-sum`` the builtin ``sum`` adds floats with compensation, as CPython 3.12's does,
before minigrad is imported: no bit may change.
"""
import argparse
import builtins
import hashlib
import json
import random
import struct
import sys

_plain_sum = builtins.sum


def compensated_sum(iterable, /, start=0):
    """The builtin ``sum``, but floats added with Neumaier's compensation (as CPython >= 3.12)."""
    items = list(iterable)
    numbers = all(isinstance(x, (int, float)) for x in items) and isinstance(start, (int, float))
    if not numbers or not any(isinstance(x, float) for x in [start, *items]):
        return _plain_sum(items, start)
    total, compensation = float(start), 0.0
    for x in map(float, items):
        t = total + x
        compensation += (total - t) + x if abs(total) >= abs(x) else (x - t) + total
        total = t
    return total + compensation


def digest(floats):
    floats = [float(x) for x in floats]
    return hashlib.sha256(struct.pack(f"<{len(floats)}d", *floats)).hexdigest()


def flat(nested):
    if isinstance(nested, (list, tuple)):
        return [x for item in nested for x in flat(item)]
    return [nested]


def portable_functions():
    from minigrad import portable_math as pm
    rng = random.Random(0)
    xs = [rng.uniform(-30.0, 30.0) for _ in range(3000)] + [rng.uniform(-1.0, 1.0) for _ in range(3000)]
    positives = [abs(x) + 1e-3 for x in xs]
    out = [f(x) for f in (pm.exp, pm.tanh, pm.sigmoid, pm.sin, pm.cos) for x in xs]
    out += [pm.log(x) for x in positives]
    out += [pm.power(x, p) for x in positives[:2000] for p in (-2.5, -1.0, 0.5, 1.7, 3.0, 7.0)]
    return digest(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compensated-sum", action="store_true")
    args = parser.parse_args()
    if args.compensated_sum:
        builtins.sum = compensated_sum

    from minigrad import losses, nn
    from minigrad.core import as_value_array
    from minigrad.data import augment, load_mnist5k
    from minigrad.data.mnist_task import pm1_mse_loss, reference_model_fn
    from parallel.trainer import DataParallelTrainer

    result = {"portable_math": portable_functions()}

    train, test = load_mnist5k("train"), load_mnist5k("test")
    result["pixels"] = hashlib.sha256(train.images.tobytes() + test.images.tobytes()).hexdigest()

    rng = random.Random(1)
    moved = [augment.AUGMENTATIONS[name](x.tolist(), rng) for x in train.images[:10]
             for name in ("shift_rotate", "elastic")]
    result["augment"] = digest(flat(moved))

    image, label = train.images[0].tolist(), int(train.labels[0])
    for fused in (True, False):
        model = nn.CNN.reference(seed=0)
        model.set_fused(fused)
        x = as_value_array(image)
        outputs = model(x)
        (pm1_mse_loss(outputs, label) + losses.cross_entropy(outputs, label)).backward()
        grads = [p.grad for p in model.parameters()] + [v.grad for v in flat(x)]
        result["gradients, fused" if fused else "gradients, op by op"] = digest(grads)

    runs = {"adam, cosine": dict(optimizer="adam", lr=3e-3, weight_decay=3e-4, lr_schedule="cosine"),
            "sgd, step": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, lr_schedule="step")}
    subset = type(train)(train.images[::50], train.labels[::50], "probe")
    for name, options in runs.items():
        with DataParallelTrainer(reference_model_fn(0), pm1_mse_loss, workers=0, seed=3,
                                 augment_fn=augment.shift_rotate, **options) as trainer:
            trainer.fit(subset, epochs=1, batch_size=8, max_steps=6)
            result[f"training, {name}"] = trainer.parameters_sha256()
            evaluation = trainer.evaluate(type(test)(test.images[::10], test.labels[::10], "probe-test"))
            result[f"evaluation, {name}"] = digest([evaluation.loss, *evaluation.predictions])
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
