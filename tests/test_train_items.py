"""The engine's items are the model's arguments: tensors, tuples, dicts, labelled
torchvision datasets and fresh episodes; learning-rate schedules and weight decay."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torchvision
from pyro.nn import PyroModule

from pyromem.data import FreshEpisodes
from pyromem.train import fit, load_checkpoint
from pyromem.train.batches import datapoints, model_arguments, yields_labels
from pyromem.train.schedules import LearningRateFactor
from tests.test_data_torchvision import _write_mnist
from tests.test_train import FailAtEpoch, accelerator_of, make_data, make_model, parameters

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")


class Regression(PyroModule):
    """y | x, w ~ N(x·w, 0.1²) with w ~ N(0, I): a model of two positional arguments."""

    def __init__(self, dim=3):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(dim))
        self.log_scale = torch.nn.Parameter(torch.zeros(dim))

    def model(self, x, y, num_data=None):
        w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
        with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
            pyro.sample("y", dist.Normal(x @ w, 0.1), obs=y)

    def guide(self, x, y, num_data=None):
        pyro.sample("w", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))


def test_model_arguments_and_datapoints():
    x, y = torch.zeros(5, 2), torch.ones(5)
    assert model_arguments(x) == ((x,), {})
    assert model_arguments((x, y))[0] == (x, y)
    assert model_arguments((x, y), drop_labels=True)[0] == (x,)
    assert model_arguments({"x": x, "memory": y}) == ((), {"x": x, "memory": y})
    assert datapoints((x, y), {}) == 5 and datapoints((), {"memory": y[:2], "x": x}) == 5
    with pytest.raises(TypeError, match="batch: expected a tensor"):
        model_arguments(3)
    with pytest.raises(TypeError, match="the keyword argument 'x'"):
        datapoints((), {"memory": y})


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_tuples_and_dicts_are_the_models_arguments(tmp_path, device, as_dict):
    # the posterior mean of w is the ridge estimate (X'X + 0.01 I)^-1 X'y (a closed form)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=generator)
    w = torch.tensor([1.0, -2.0, 0.5])
    y = x @ w + 0.1 * torch.randn(256, generator=generator)
    items = [{"x": a, "y": b} for a, b in zip(x, y, strict=True)] if as_dict else None
    data = items or torch.utils.data.TensorDataset(x, y)
    model = Regression().to(device)
    fit(
        model,
        data,
        out_dir=tmp_path,
        epochs=60,
        batch_size=64,
        lr=0.05,
        progress=False,
        accelerator=accelerator_of(device),
    )
    # within the SVI noise of one-sample gradients (the last iterate at this lr lies 0.005-0.09
    # from the ridge over random streams); ignoring y would leave w near 0, 2 away
    ridge = torch.linalg.solve(x.T @ x + 0.01 * torch.eye(3), x.T @ y)
    assert torch.allclose(model.loc.detach().cpu(), ridge, atol=0.2)


def test_labelled_torchvision_dataset_trains_on_images(tmp_path):
    _write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    mnist = torchvision.datasets.MNIST(
        tmp_path, train=True, transform=lambda image: torch.as_tensor(np.asarray(image)).float()
    )
    assert yields_labels(mnist) and not yields_labels(torch.utils.data.TensorDataset(torch.ones(1)))

    class PixelMean(PyroModule):
        # one argument only: a label passed on would fail with a TypeError
        def __init__(self):
            super().__init__()
            self.loc = torch.nn.Parameter(torch.zeros(()))

        def model(self, x, num_data=None):
            mean = pyro.sample("mean", dist.Normal(torch.zeros(()), 1000.0))
            with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
                pyro.sample("x", dist.Normal(mean, 100.0).expand(x.shape[1:]).to_event(2), obs=x)

        def guide(self, x, num_data=None):
            pyro.sample("mean", dist.Delta(self.loc))

    model = PixelMean()
    result = fit(model, mnist, out_dir=tmp_path / "run", epochs=1, batch_size=4, progress=False)
    assert result.epochs == 1 and model.loc.grad is not None


def _episode(generator):
    memory = torch.randn(6, 4, generator=generator)
    return {"x": memory[torch.randint(6, (3,), generator=generator)], "memory": memory}


def test_fresh_episodes_are_seeded_by_seed_epoch_rank_and_index():
    episodes = FreshEpisodes(_episode, 4, seed=3)
    first = episodes[2]["x"]
    assert torch.equal(first, episodes[2]["x"]) and not torch.equal(first, episodes[1]["x"])
    episodes.set_epoch(1)
    assert not torch.equal(first, episodes[2]["x"])
    episodes.set_epoch(0, rank=1)
    assert not torch.equal(first, episodes[2]["x"])
    episodes.set_epoch(0, rank=0)
    assert torch.equal(first, episodes[2]["x"])
    with pytest.raises(ValueError, match="num_episodes: expected an int >= 1"):
        FreshEpisodes(_episode, 0)
    with pytest.raises(IndexError):
        episodes[4]


class EpisodeModel(PyroModule):
    """x_i ~ N(memory[a_i] + b, 1), a_i uniform: a model whose memory comes with each batch."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(4))
        self.calls = []

    def model(self, x, memory):
        self.calls.append(len(memory))
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Categorical(logits=x.new_zeros(len(memory))))
            pyro.sample("x", dist.Normal(memory[a] + self.bias, 1.0).to_event(1), obs=x)

    def guide(self, x, memory):
        with pyro.plate("data", len(x)):
            logits = -(x.unsqueeze(1) - memory).square().sum(-1)
            pyro.sample("a", dist.Categorical(logits=logits))


def test_episodes_resume_bit_exactly_and_schedules_are_logged(tmp_path):
    def run(out, callbacks=(), resume=False):
        torch.manual_seed(0)
        model = EpisodeModel()
        options = {
            "epochs": 4,
            "batch_size": None,
            "lr": 0.1,
            "lr_schedule": "cosine",
            "warmup_epochs": 1,
            "seed": 5,
            "accelerator": "cpu",
            "progress": False,
        }
        result = fit(
            model,
            FreshEpisodes(_episode, 5, seed=5),
            out_dir=out,
            callbacks=callbacks,
            resume=resume,
            **options,
        )
        return model, result

    full, full_result = run(tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "cut", [FailAtEpoch(2)])
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.ckpt").epoch == 2
    resumed, resumed_result = run(tmp_path / "cut", resume=True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(parameters(full).values(), parameters(resumed).values(), strict=True)
    )
    # each step got a memory of 6 slots; the rate of epoch e's end: 20 steps, 5 of warm-up
    assert set(full.calls) == {6}
    factor = LearningRateFactor("cosine", 20, 5)
    logged = [row["lr"] for row in full_result.history]
    assert logged == pytest.approx([0.1 * factor(k) for k in (5, 10, 15, 20)])
    assert [row["lr"] for row in resumed_result.history] == pytest.approx(logged)


@pytest.mark.parametrize("warmup", [0, 7])
def test_one_cycle_and_cosine_match_torchs_schedulers(warmup):
    total, lr = 40, 0.3
    cases = [("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, total))]
    if warmup:
        cases.append(
            (
                "one-cycle",
                lambda o: torch.optim.lr_scheduler.OneCycleLR(
                    o, max_lr=lr, total_steps=total, pct_start=warmup / total, cycle_momentum=False
                ),
            )
        )
    for name, make in cases:
        if name == "cosine" and warmup:
            continue
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        scheduler, factor = make(optimizer), LearningRateFactor(name, total, warmup)
        for step in range(total):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(lr * factor(step), abs=1e-12)
            optimizer.step()
            scheduler.step()
    constant = LearningRateFactor("constant", total, 4)
    assert [constant(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_weight_decay_shrinks_parameters_and_bad_options_are_refused(tmp_path):
    data = make_data(64, "cpu")
    norms = {}
    for decay in (0.0, 1.0):
        model = make_model("cpu")
        fit(
            model,
            data,
            out_dir=tmp_path / str(decay),
            epochs=3,
            batch_size=16,
            lr=1e-2,
            weight_decay=decay,
            progress=False,
            accelerator="cpu",
        )
        norms[decay] = model.decoder.weight.norm().item()
    assert norms[1.0] < norms[0.0]
    with pytest.raises(ValueError, match="lr_schedule: expected one of"):
        fit(make_model("cpu"), data, out_dir=tmp_path / "x", lr_schedule="step")
    with pytest.raises(ValueError, match="weight_decay: expected a float >= 0"):
        fit(make_model("cpu"), data, out_dir=tmp_path / "x", weight_decay=-1.0)


def test_evaluation_every_n_epochs_reports_its_cost(tmp_path):
    data = make_data(64, "cpu")
    result = fit(
        make_model("cpu"),
        data[:48],
        eval_data=data[48:],
        eval_every=2,
        eval_particles=3,
        out_dir=tmp_path,
        epochs=5,
        batch_size=16,
        progress=False,
        accelerator="cpu",
    )
    scored = [row["epoch"] for row in result.history if "eval_elbo_nats" in row]
    assert scored == [2, 4, 5]
    assert all(row["eval_seconds"] > 0 for row in result.history if "eval_seconds" in row)
