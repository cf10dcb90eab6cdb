"""The engine's cheap paths give the answers of the direct ones: batches of index tensors,
finiteness read through sums, the data check's fast pass, checkpoints written in the background."""

import math
import threading

import pyro
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import BatchSampler

from pyromem.data.fresh_episodes import derive_seed
from pyromem.train import SVIModule, fit, load_checkpoint
from pyromem.train.checkpoint import AtomicCheckpointIO
from pyromem.train.data_checks import check_training_data
from pyromem.train.divergence import all_finite
from pyromem.train.engine import _TensorDataset
from pyromem.train.module import _fused_kernels_apply
from pyromem.train.seeding import EpochShuffleBatches, EpochShuffleSampler
from tests.test_train import make_data, make_model

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_are_torchs_batch_sampler_over_the_epochs_order(drop_last):
    batches = EpochShuffleBatches(EpochShuffleSampler(10, seed=3), 4, drop_last=drop_last)
    iterator = iter(batches)
    batches.set_epoch(2)  # Lightning may create the iterator before it sets the epoch
    reference = EpochShuffleSampler(10, seed=3)
    reference.set_epoch(2)
    expected = list(BatchSampler(reference, 4, drop_last=drop_last))
    assert [batch.tolist() for batch in iterator] == expected


FINITENESS = {
    "finite": [torch.randn(5), torch.randn(2, 3, dtype=torch.float64)],
    "finite, float32 sum overflows": [torch.full((1000,), 3e38)],
    "finite, float16 sum overflows": [torch.full((10,), 6e4, dtype=torch.float16)],
    "inf": [torch.ones(3), torch.tensor([1.0, math.inf])],
    "inf and -inf": [torch.tensor([math.inf, -math.inf])],
    "nan": [torch.tensor([0.0, math.nan])],
    "none": [],
}


@pytest.mark.parametrize("case", sorted(FINITENESS))
def test_finiteness_through_sums_is_isfinite(case):
    tensors = FINITENESS[case]
    assert all_finite(tensors) == all(bool(torch.isfinite(t).all()) for t in tensors)


def test_the_data_check_finds_a_bad_datapoint_and_passes_large_finite_ones(tmp_path):
    data = make_data(300, "cpu")
    data[250, 1] = math.inf  # behind the first batch, which goes through the model
    with pytest.raises(ValueError, match="datapoint 250 holds NaN or infinite values"):
        fit(make_model("cpu"), data, out_dir=tmp_path, batch_size=128, progress=False)
    large = make_data(300, "cpu")
    large[128:] = 3e38  # finite, but their float32 sum is not
    check_training_data(
        make_model("cpu"), _TensorDataset(large), batch_size=128, drop_labels=False, num_data=300
    )


def test_a_background_checkpoint_holds_the_state_at_save_time(tmp_path, monkeypatch):
    stepped = threading.Event()
    save = torch.save

    def save_after_the_step(*args, **kwargs):
        stepped.wait(timeout=10)
        save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save_after_the_step)
    weight = torch.arange(6.0).reshape(2, 3)
    io = AtomicCheckpointIO(background=True)
    io.save_checkpoint({"state_dict": {"w": weight}}, tmp_path / "a.ckpt")
    weight.add_(100.0)  # the optimiser's next step, before the file is written
    stepped.set()
    io.save_checkpoint({"state_dict": {"w": weight}}, tmp_path / "b.ckpt")
    io.teardown()
    first = io.load_checkpoint(tmp_path / "a.ckpt")["state_dict"]["w"]
    second = io.load_checkpoint(tmp_path / "b.ckpt")["state_dict"]["w"]
    assert torch.equal(first, torch.arange(6.0).reshape(2, 3))
    assert torch.equal(second, weight)


def test_plain_attributes_of_the_module_are_set_as_nn_module_sets_them():
    module = SVIModule(make_model("cpu"), 10)
    module._current_fx_name = "training_step"  # what Lightning sets around every hook
    assert module.__dict__["_current_fx_name"] == "training_step"
    with pytest.raises(TypeError, match="cannot assign 'str' as child module"):
        module.model = "not a module"
    module.register_parameter("w", torch.nn.Parameter(torch.ones(2)))
    module.w = None  # a parameter's name still goes through nn.Module
    assert "w" in module._parameters and module.w is None and "w" not in module.__dict__


def test_cpu_steps_do_not_ask_for_cuda_and_train_as_the_same_adam(tmp_path, monkeypatch):
    # torch's Adam asks torch.cuda.is_available() in every step (its CUDA-graph check)
    asked = []
    is_available = torch.cuda.is_available
    monkeypatch.setattr(torch.cuda, "is_available", lambda: asked.append(1) or is_available())

    class CountSteps(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = len(asked)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.during = len(asked) - self.before
            self.fused = trainer.optimizers[0].param_groups[0]["fused"]

    data, counted = make_data(8, "cpu"), CountSteps()
    fit(
        make_model("cpu"),
        data,
        out_dir=tmp_path,
        epochs=1,
        batch_size=8,
        progress=False,
        accelerator="cpu",
        callbacks=[counted],
    )
    assert counted.during == 0
    assert counted.fused  # torch's fused kernel, the same update as its default one
    # the same step with torch's own default Adam, the check included
    model = make_model("cpu")
    batch = data[EpochShuffleSampler(8, seed=0).permutation()]  # epoch 0's order
    pyro.set_rng_seed(derive_seed(0, 0, 0))  # epoch 0 on rank 0
    loss = pyro.infer.Trace_ELBO()(model.model, model.guide)(batch, num_data=8) / 8
    loss.backward()
    before = len(asked)
    torch.optim.Adam(model.parameters(), lr=1e-3).step()
    assert len(asked) > before
    trained = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt").state_dict
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())


def test_fused_adam_only_where_its_kernel_applies():
    cpu = torch.zeros(3, requires_grad=True)
    assert _fused_kernels_apply([cpu])
    assert not _fused_kernels_apply([cpu, torch.zeros(3, device="meta")])
    assert not _fused_kernels_apply([torch.zeros(3, dtype=torch.complex64)])
