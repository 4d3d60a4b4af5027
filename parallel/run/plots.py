"""The run's pictures: training.png (loss and accuracy curves), filters.png (the first layer's
filters), mistakes.png (misclassified digits) and confusion.png (the confusion matrix).

Drawn with matplotlib's Agg backend (no display needed) and written through the one atomic
writer (``minigrad.atomic_file``). When matplotlib is not installed the functions return
False and the run goes on.
"""
import math
import os

from minigrad.atomic_file import atomic_write


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


def moving_average(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_training(train_rows, test_rows, path, steps_per_epoch):
    """Training loss per step (and its moving average), test loss and accuracy per epoch,
    and the memory of the parent and the largest worker."""
    plt = _pyplot()
    if plt is None or not train_rows:
        return False
    fig, (left, right, memory) = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train_rows]
    losses = [r["loss"] for r in train_rows]
    left.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
    left.plot(steps, moving_average(losses, max(1, len(losses) // 50)), color="tab:blue",
              label="train (moving average)")
    if test_rows:
        left.plot([r["step"] for r in test_rows], [r["loss"] for r in test_rows], "o-", color="tab:red",
                  label="test")
        right.plot([r["step"] / steps_per_epoch for r in test_rows], [100 * r["accuracy"] for r in test_rows],
                   "o-", color="tab:green")
        for r in test_rows[-1:]:
            right.annotate(f"{100 * r['accuracy']:.1f}%", (r["step"] / steps_per_epoch, 100 * r["accuracy"]),
                           textcoords="offset points", xytext=(-10, -15))
    left.set(xlabel="step", ylabel="MSE loss", title="Loss", yscale="log")
    left.legend()
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="Test accuracy")
    right.grid(alpha=0.3)
    if "parent_rss_mb" in train_rows[0]:
        memory.plot(steps, [r["parent_rss_mb"] for r in train_rows], label="parent")
        memory.plot(steps, [r["worker_rss_mb"] for r in train_rows], label="largest worker")
        memory.set_ylim(bottom=0)
        memory.legend()
    memory.set(xlabel="step", ylabel="RSS (MB)", title="Memory")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_filters(weights, path, title="First-layer filters"):
    """One grey image per output channel of a conv weight ``[out][in][k][k]`` (first input channel)."""
    plt = _pyplot()
    if plt is None:
        return False
    n = len(weights)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    limit = max(abs(v) for f in weights for row in f[0] for v in row)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(weights[i][0], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_title(str(i), fontsize=8)
    fig.suptitle(f"{title} (red +, blue -, max |w| = {limit:.2f})", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


# mistakes.png and confusion.png: what a trained model gets wrong (``evaluate.py --pictures DIR``).

MATPLOTLIB_MISSING = 'matplotlib is not installed: pip install "minigrad[plots]"'
SCORE_NOTE = "the model's output for the predicted class (trained towards +1 there, -1 elsewhere)"


def first_mistakes(predictions, labels, limit=64):
    """The indices of the first ``limit`` samples whose prediction is not their label, in order."""
    from minigrad.checks import int_at_least
    limit = int_at_least("limit", limit, 0)
    if len(predictions) != len(labels):
        raise ValueError(f"Expected as many predictions as labels ({len(labels)}), got {len(predictions)}")
    wrong = (i for i, (p, y) in enumerate(zip(predictions, labels)) if p != y)
    return [i for _, i in zip(range(limit), wrong)]


def plot_mistakes(images, labels, predictions, scores, path, total=None, title="Misclassified digits"):
    """A grid of digits (each 2-D, or 1xHxW) titled ``true->predicted`` and the score of the prediction.

    ``scores`` is what the caller chose as the model's confidence (``SCORE_NOTE`` for the +-1 MSE
    model); ``total`` the number of mistakes in all, when the grid shows only the first ones.
    """
    plt = _pyplot()
    if plt is None:
        return False
    n = len(images)
    if not len(labels) == len(predictions) == len(scores) == n:
        raise ValueError(f"Expected {n} labels, predictions and scores, got "
                         f"{len(labels)}, {len(predictions)} and {len(scores)}")
    cols = max(1, min(n, 8))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.6 * rows + 0.9), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            image = images[k]
            ax.imshow(image[0] if len(image) == 1 else image, cmap="gray_r", interpolation="nearest")
            ax.set_title(f"{labels[k]}\u2192{predictions[k]}  {scores[k]:+.2f}", fontsize=9, color="tab:red")
    shown = f"the first {n} of {total}" if total is not None and total > n else (f"all {n}" if n else "none")
    fig.suptitle(f"{title}: {shown}, as the model saw them\n"
                 f"true\u2192predicted, and {SCORE_NOTE}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_confusion(confusion, path, title="Confusion matrix"):
    """A heat map of ``confusion[true][predicted]`` with every count written in its cell
    (colours on a log scale, so the few mistakes show beside the many right answers)."""
    plt = _pyplot()
    if plt is None:
        return False
    from matplotlib.colors import LogNorm
    n = len(confusion)
    if n == 0 or any(len(row) != n for row in confusion):
        raise ValueError(f"Expected a square confusion matrix, got rows of lengths {[len(r) for r in confusion]}")
    top = max(max(row) for row in confusion)
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.2, 0.55 * n + 1.4))
    masked = [[v if v > 0 else float("nan") for v in row] for row in confusion]
    image = ax.imshow(masked, cmap="Blues", norm=LogNorm(vmin=0.6, vmax=max(top, 2)))
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            dark = v > 0 and math.log(v) > 0.6 * math.log(max(top, 2))
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if dark else ("black" if v else "lightgrey"))
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(length=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count (log scale)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_evaluation(folder, model, dataset, evaluation):
    """``folder``/mistakes.png and ``folder``/confusion.png of ``evaluation`` (of ``model`` on an image
    ``dataset``); the model's outputs are computed here, in this process and without a graph, for the
    misclassified digits only. Returns the paths drawn ([] without matplotlib)."""
    import minigrad
    from minigrad.nested import flatten

    wrong = first_mistakes(evaluation.predictions, evaluation.labels)
    images = [dataset.images[i] for i in wrong]
    predictions = [evaluation.predictions[i] for i in wrong]
    with minigrad.no_grad():
        outputs = [[o.v for o in flatten(model(x.tolist()))] for x in images]
    total = sum(p != y for p, y in zip(evaluation.predictions, evaluation.labels))
    paths = [os.path.join(folder, "mistakes.png"), os.path.join(folder, "confusion.png")]
    drawn = plot_mistakes(images, [evaluation.labels[i] for i in wrong], predictions,
                          [out[p] for out, p in zip(outputs, predictions)], paths[0], total=total,
                          title=f"Misclassified {dataset.name} digits")
    drawn = plot_confusion(evaluation.confusion, paths[1], title=f"{dataset.name}: {100 * evaluation.accuracy:.2f}% "
                           f"of {evaluation.n} digits right (rows: true label)") and drawn
    return paths if drawn else []
