import numpy as np
import pytest
import torch

from pyromem.train import SVIModule, fit, load_checkpoint
from tests.test_train import make_data, make_model, parameters

# Lightning 2.6 on torch 2.14 warns from its own internals.
pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")


@pytest.mark.parametrize(
    "options",
    [
        dict(lr=np.float32(0.02)),
        dict(lr=np.float64(0.02), weight_decay=np.float64(1e-3)),
        dict(warmup_epochs=np.float64(0.5)),
        dict(batch_size=np.int64(7)),
        dict(epochs=np.int64(2), lr_schedule="cosine", eval_every=np.int64(1)),
        dict(seed=np.int64(3), gradient_clip_val=np.float32(5.0)),
        dict(config={"model": "toy", "toy": {"scale": np.float64(0.5), "name": np.str_("a")}}),
    ],
)
def test_numpy_scalar_options_give_a_checkpoint_that_loads_and_resumes(tmp_path, options):
    # np.float64 is a float and np.int64 an Integral, so the checks take them (a learning
    # rate from np.logspace, a batch size from an array); they must not reach the checkpoint,
    # which torch.load(weights_only=True) would then refuse as "corrupt"
    data = make_data(50, "cpu")
    kwargs = dict(epochs=2, batch_size=7, lr=0.02, accelerator="cpu", progress=False)
    kwargs.update(options)
    plain = {
        key: value.item() if isinstance(value, np.generic) else value
        for key, value in kwargs.items()
        if key != "config"
    }
    first = fit(make_model("cpu"), data, out_dir=tmp_path / "numpy", **kwargs)
    saved = load_checkpoint(first.checkpoint)
    assert saved.epoch == 2
    if "config" in options:
        assert saved.config["toy"] == {"scale": 0.5, "name": "a"}
        assert type(saved.config["toy"]["scale"]) is float
    if kwargs.get("lr_schedule") == "cosine":
        return  # a cosine schedule spans the run: it cannot be resumed for more epochs
    full = fit(make_model("cpu"), data, out_dir=tmp_path / "plain", **{**plain, "epochs": 3})
    resumed = fit(
        make_model("cpu"), data, out_dir=tmp_path / "numpy", resume=True, **kwargs | {"epochs": 3}
    )
    assert resumed.epochs == 3
    expected, got = parameters(full.model), parameters(resumed.model)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_svi_module_keeps_plain_float_rates():
    module = SVIModule(
        make_model("cpu"),
        8,
        lr=np.float32(0.5),
        weight_decay=np.float64(0.1),
        warmup_epochs=np.int64(1),
    )
    assert [type(value) for value in (module.lr, module.weight_decay, module.warmup_epochs)] == [
        float
    ] * 3
