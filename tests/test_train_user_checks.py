"""What a researcher relying on ``fit`` expects: arguments checked, named and refused before any
work; a held-out ELBO that cannot be scored refused before the first epoch; a resume that would
silently train at a spent schedule's rate refused; a divergence that says what it kept."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from pyro.nn import PyroModule

from pyromem.train import TrainingDiverged, fit, load_checkpoint
from tests.test_train import make_data, make_model

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps += 1


def train(tmp_path, **options):
    arguments = dict(model=make_model("cpu"), train_data=make_data(8, "cpu"), progress=False)
    arguments.update(options)
    model, train_data = arguments.pop("model"), arguments.pop("train_data")
    return fit(model, train_data, out_dir=tmp_path / "run", **arguments)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(lr="0.1"), "lr: expected a float, got str '0.1'"),
        (dict(weight_decay=None), "weight_decay: expected a float, got NoneType"),
        (dict(warmup_epochs="1"), "warmup_epochs: expected a float, got str"),
        (dict(gradient_clip_val="1"), "gradient_clip_val: expected a float or None, got str"),
        (dict(resume="yes"), "resume: expected True or False, got str"),
        (dict(progress="no"), "progress: expected True or False, got str"),
        (dict(drop_labels="x"), "drop_labels: expected True or False or None, got str"),
        (dict(callbacks=[1]), "callbacks: expected Lightning callbacks, got int 1 at index 0"),
        (dict(callbacks=CountSteps()), "callbacks: expected a list of Lightning callbacks"),
    ],
)
def test_options_of_the_wrong_type_are_named_before_any_work(tmp_path, options, match):
    # before: torch's or Python's words ("'<' not supported between instances of 'int' and
    # 'str'", "'int' object has no attribute 'on_exception'"), or a truthy string taken as True
    with pytest.raises(TypeError, match=match):
        train(tmp_path, **options)
    assert not (tmp_path / "run").exists()


def test_batch_size_none_with_a_tensor_of_datapoints_is_refused(tmp_path):
    # each row would be taken as one step's arguments, its D values as D datapoints
    count = CountSteps()
    with pytest.raises(
        ValueError, match="batch_size: None .* Tensor of 8 datapoints; batch_size=8"
    ):
        train(tmp_path, batch_size=None, callbacks=[count])
    assert count.steps == 0
    # a list of batches is an episode per step, as before
    result = train(
        tmp_path, train_data=list(make_data(8, "cpu").split(3)), batch_size=None, epochs=1
    )
    assert result.epochs == 1


class EnumeratedMixture(PyroModule):
    """a ~ Cat(½, ½) enumerated in the model, z | a ~ N(m_a, 1), x | z ~ N(z, ½); q(z | x)."""

    def __init__(self):
        super().__init__()
        self.locs = torch.nn.Parameter(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]))
        self.encoder = torch.nn.Linear(2, 2)

    def model(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
            logits = x.new_zeros(2)
            a = pyro.sample("a", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(self.locs[a], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
            pyro.sample("z", dist.Normal(self.encoder(x), 0.5).to_event(1))


def test_eval_data_the_diagnostics_cannot_score_is_refused_before_the_first_epoch(tmp_path):
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    options = dict(batch_size=4, epochs=1, elbo=pyro.infer.TraceEnum_ELBO(max_plate_nesting=1))
    # TraceEnum_ELBO trains the model; the held-out ELBO draws every latent site from the
    # guide. Before, the run stopped with a traceback at the end of its first epoch, before
    # that epoch's checkpoint.
    count = CountSteps()
    with pytest.raises(
        ValueError, match=r"eval_data: .*latent site\(s\) \['a'\].*enumerated"
    ) as error:
        train(tmp_path, model=EnumeratedMixture(), train_data=x, eval_data=x, callbacks=[count])
    assert "\n" not in str(error.value)
    assert count.steps == 0
    result = train(tmp_path, model=EnumeratedMixture(), train_data=x, **options)
    assert result.epochs == 1 and load_checkpoint(result.checkpoint).epoch == 1


@pytest.mark.parametrize("schedule", ["cosine", "one-cycle"])
def test_resuming_a_schedule_that_spans_the_run_with_other_epochs_is_refused(tmp_path, schedule):
    options = dict(batch_size=4, lr=0.1, lr_schedule=schedule)
    train(tmp_path, epochs=2, **options)
    # before: the restored scheduler kept the 2-epoch run's length, so epochs 3 and 4 trained
    # at its last rate (0 for cosine)
    with pytest.raises(ValueError, match=f"epochs=2, this run has epochs=4; its {schedule}"):
        train(tmp_path, epochs=4, resume=True, **options)


def test_a_constant_run_may_be_resumed_with_more_epochs(tmp_path):
    options = dict(batch_size=4, lr=0.01, warmup_epochs=1.0)
    train(tmp_path, epochs=2, **options)
    result = train(tmp_path, epochs=3, resume=True, **options)
    assert [row["lr"] for row in result.history] == pytest.approx([0.01] * 3)


class RaiseRate(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 1e30


def test_a_divergence_says_which_checkpoint_it_kept_or_that_there_is_none(tmp_path):
    with pytest.raises(TrainingDiverged, match="no checkpoint was written") as error:
        train(tmp_path, batch_size=2, epochs=3, callbacks=[RaiseRate(0)])
    assert "checkpoint is kept" not in str(error.value)
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()

    checkpoint = tmp_path / "later" / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainingDiverged, match=f"checkpoint, {checkpoint}, is kept \\(2 epochs\\)"):
        train(tmp_path / "later", batch_size=2, epochs=4, callbacks=[RaiseRate(2)])
    saved = load_checkpoint(checkpoint)
    assert saved.epoch == 2
    assert all(torch.isfinite(value).all() for value in saved.state_dict.values())
