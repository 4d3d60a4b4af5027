"""What fit and evaluate compute: six steps of SGD against the same net in torch (float64), evaluate
against a plain loop over the samples, and fit's evaluation after each epoch with its reports."""
import numpy as np
import pytest

from helpers_parallel import N_CLASSES, tiny_dataset, tiny_loss, tiny_model, tiny_trainer
from parallel.data_order import epoch_order

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")


def test_training_matches_torch_float64(torch):
    """Six steps of SGD with momentum on the tiny CNN, against the same net in torch."""
    torch.set_default_dtype(torch.float64)
    data = tiny_dataset()
    with tiny_trainer(2, lr_schedule="constant") as trainer:
        start = trainer.model.state_dict()
        trainer.fit(data, epochs=1, batch_size=4, max_steps=6)
        got = trainer.model.state_dict()
        order = epoch_order(len(data), 0, 0)
    conv = torch.nn.Conv2d(1, 3, 4, 2)
    hidden, output = torch.nn.Linear(27, 6), torch.nn.Linear(6, N_CLASSES)
    layers = {"conv.0": conv, "hidden": hidden, "output": output}
    for name, layer in layers.items():
        layer.weight.data = torch.tensor(start[name + ".weight"])
        layer.bias.data = torch.tensor(start[name + ".bias"])
    params = [p for layer in layers.values() for p in (layer.weight, layer.bias)]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    x_all, y_all = torch.tensor(data.images), torch.tensor(data.labels)
    for step in range(6):
        idx = order[step * 4:(step + 1) * 4]
        x = torch.tanh(conv(x_all[idx])).flatten(1)
        out = torch.tanh(output(torch.tanh(hidden(x))))
        target = -torch.ones(len(idx), N_CLASSES)
        target[torch.arange(len(idx)), y_all[idx]] = 1.0
        loss = ((out - target) ** 2).mean(dim=1).mean()  # mean over classes, then over the batch
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, layer in layers.items():
        np.testing.assert_allclose(got[name + ".weight"], layer.weight.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[name + ".bias"], layer.bias.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_evaluate_matches_a_plain_loop():
    data = tiny_dataset(n=30, seed=1)
    model = tiny_model()
    losses, hits = [], 0
    confusion = [[0] * N_CLASSES for _ in range(N_CLASSES)]
    for x, y in zip(data.images, data.labels):
        out = [o.v for o in model(x.tolist())]
        losses.append(tiny_loss(model(x.tolist()), int(y)).v)
        p = out.index(max(out))
        hits += p == y
        confusion[y][p] += 1
    with tiny_trainer(3) as trainer:
        ev = trainer.evaluate(data)
    assert ev.n == 30
    assert ev.accuracy == hits / 30
    assert ev.loss == sum(losses) / 30
    assert ev.confusion == confusion


def test_fit_evaluates_after_each_epoch_and_reports_steps():
    data, test = tiny_dataset(n=12), tiny_dataset(n=6, seed=2)
    steps, epochs = [], []
    with tiny_trainer(2) as trainer:
        history = trainer.fit(data, epochs=2, batch_size=5, test=test, on_step=lambda r: steps.append(r.step),
                              on_epoch=lambda done, ev: epochs.append((done, ev.n)))
        final = trainer.evaluate(test)
    assert steps == [1, 2, 3, 4, 5, 6] and epochs == [(1, 6), (2, 6)]  # 12 samples: batches of 5, 5, 2
    assert [s for s, _ in history["train"]] == steps
    assert history["test"][-1][1].loss == final.loss
