"""The data-parallel trainer: training against torch, payload sent once, evaluation, argument checks."""

import numpy as np
import pytest

from helpers_parallel import (N_CLASSES, CountingDataset, count_events, counting_model_fn, tiny_dataset, tiny_loss,
                              tiny_model, tiny_trainer)
from parallel import (DataParallelTrainer)
from parallel.data_order import epoch_order
from parallel.process_pool import ProcessBackend

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


def test_model_loss_and_data_reach_each_worker_once(tmp_path):
    model_counter, data_counter = str(tmp_path / "model"), str(tmp_path / "data")
    data = CountingDataset(tiny_dataset(), data_counter)
    with DataParallelTrainer(counting_model_fn(model_counter), tiny_loss, lr=0.05, workers=2,
                             log=lambda line: None) as trainer:
        trainer.fit(data, epochs=3, batch_size=4, max_steps=12)
        trainer.evaluate(data)
    assert count_events(model_counter) == 2  # one replica per worker, not one per step
    assert count_events(data_counter) == 2


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


@pytest.mark.parametrize("kwargs,message", [
    ({"workers": -1}, "workers"),
    ({"workers": 1.5}, "workers"),
    ({"backend": "threads", "workers": 1}, "backend"),
    ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"seed": "0"}, "seed"),
    ({"lr": -0.1}, "lr"),
])
def test_bad_trainer_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_trainer(**{"workers": 0, **kwargs})


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"max_steps": 0}, "max_steps")])
def test_bad_fit_arguments(kwargs, message):
    args = {"epochs": 1, "batch_size": 4, **kwargs}
    with tiny_trainer(0) as trainer, pytest.raises(ValueError, match=message):
        trainer.fit(tiny_dataset(), **args)


def test_more_workers_than_cpus_warns_but_runs():
    from parallel import available_cpus
    with pytest.warns(RuntimeWarning, match="CPUs"):
        backend = ProcessBackend(available_cpus() + 1)
    assert backend.workers == available_cpus() + 1
    backend.close()


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
