"""training.png (loss and accuracy curves) and filters.png (the first layer's filters).

Drawn with matplotlib's Agg backend (no display needed) and written through the one atomic
writer (``minigrad.atomic_file``). When matplotlib is not installed the functions return
False and the run goes on.
"""
import math

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
