import csv
import os
import signal
import subprocess
import sys
import textwrap

import lightning
import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from pyro.nn import PyroModule

from pyromem.train import (
    Checkpoint,
    FitResult,
    SVIModule,
    TrainingInterrupted,
    fit,
    load_checkpoint,
)

# Lightning 2.6 on torch 2.14 warns from its own internals.
pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")

DIM, LATENT = 4, 2


class LinearGaussianVAE(PyroModule):
    """z ~ N(0, I), x ~ N(Wz + b, σ I); guide q(z | x) = N(Ax + c, diag(softplus(Dx + e)))."""

    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Linear(LATENT, DIM)
        self.encoder = torch.nn.Linear(DIM, 2 * LATENT)
        self.log_sigma = torch.nn.Parameter(torch.zeros(()))

    def model(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            loc = self.decoder(z)
            pyro.sample("x", dist.Normal(loc, self.log_sigma.exp()).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        scale = torch.nn.functional.softplus(raw_scale) + 1e-3
        with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def make_data(n, device):
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(n, LATENT, generator=generator)
    weight = torch.randn(LATENT, DIM, generator=generator)
    x = 2.0 * z @ weight + 1.0 + 0.1 * torch.randn(n, DIM, generator=generator)
    return x.to(device)


def make_model(device):
    torch.manual_seed(0)
    return LinearGaussianVAE().to(device)


def accelerator_of(device):
    return "gpu" if device.type == "cuda" else device.type


def parameters(model):
    return {name: p.detach().cpu().clone() for name, p in model.state_dict().items()}


class FailAtEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_training_improves_elbo_and_logs_metrics(tmp_path, device):
    data = make_data(256, device)
    result = fit(
        make_model(device),
        data[:192],
        eval_data=data[192:],
        epochs=8,
        batch_size=32,
        lr=3e-2,
        out_dir=tmp_path,
        accelerator=accelerator_of(device),
        gradient_clip_val=10.0,
        progress=False,
        config={"model": "linear-gaussian"},
    )
    assert isinstance(result, FitResult)
    assert result.epochs == 8 and len(result.history) == 8
    assert result.device.startswith(device.type)
    assert next(result.model.parameters()).device.type == device.type
    first, last = result.history[0], result.history[-1]
    # The untrained decoder explains x ~ N(0, 9 ZZ^T + 1) poorly: tens of nats are gained.
    assert last["eval_elbo_nats"] > first["eval_elbo_nats"] + 5.0
    assert last["train_elbo_nats"] > first["train_elbo_nats"] + 5.0

    rows = read_csv(result.metrics_csv)
    assert [int(row["epoch"]) for row in rows] == list(range(1, 9))
    for column in (
        "train_elbo_nats",
        "eval_elbo_nats",
        "eval_bits_per_dim",
        "kl_z",
        "loglik_x",
        "seconds",
    ):
        assert column in rows[0]
    assert float(rows[-1]["eval_elbo_nats"]) == pytest.approx(last["eval_elbo_nats"])
    # The ELBO bounds the exact marginal log-likelihood N(x; b, WW^T + σ²I) of the trained model.
    decoder = result.model.decoder
    covariance = decoder.weight @ decoder.weight.T + result.model.log_sigma.exp() ** 2 * torch.eye(
        DIM, device=device
    )
    marginal = dist.MultivariateNormal(decoder.bias, covariance)
    with torch.no_grad():
        log_likelihood = marginal.log_prob(data[192:]).mean().item()
    assert last["eval_elbo_nats"] < log_likelihood + 0.1
    # ELBO = log-likelihood - KL, term by term.
    assert last["eval_elbo_nats"] == pytest.approx(last["loglik_x"] - last["kl_z"], rel=1e-5)

    checkpoint = load_checkpoint(result.checkpoint)
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.epoch == 8
    assert checkpoint.config == {
        "model": "linear-gaussian",
        "training": {"lr_schedule": "constant", "warmup_epochs": 0.0, "batch_size": 32},
    }
    assert checkpoint.history == result.history
    restored = LinearGaussianVAE()
    restored.load_state_dict(checkpoint.state_dict)
    for name, value in parameters(restored).items():
        assert torch.equal(value, parameters(result.model)[name])


class RecordValidation(Callback):
    def __init__(self):
        self.during_training = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.during_training.append(pyro.infer.is_validation_enabled())


def test_pyro_validation_is_off_while_training_then_restored(tmp_path, device):
    pyro.enable_validation(True)
    record = RecordValidation()
    fit(
        make_model(device),
        make_data(64, device),
        epochs=1,
        batch_size=32,
        out_dir=tmp_path,
        accelerator=accelerator_of(device),
        progress=False,
        callbacks=[record],
    )
    assert record.during_training == [False, False]
    assert pyro.infer.is_validation_enabled()
    assert pyro.distributions.is_validation_enabled()


def test_resume_matches_uninterrupted_run(tmp_path, device):
    data = make_data(256, device)
    kwargs = dict(
        epochs=3,
        batch_size=64,
        lr=1e-2,
        seed=3,
        eval_data=data[:64],
        accelerator=accelerator_of(device),
        progress=False,
    )
    full = fit(make_model(device), data, out_dir=tmp_path / "full", **kwargs)

    crashed = make_model(device)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(crashed, data, out_dir=tmp_path / "resumed", callbacks=[FailAtEpoch(1)], **kwargs)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt").epoch == 1
    assert len(read_csv(tmp_path / "resumed" / "metrics.csv")) == 1

    # A fresh model object: everything must come from the checkpoint.
    fresh = LinearGaussianVAE().to(device)
    resumed = fit(fresh, data, out_dir=tmp_path / "resumed", resume=True, **kwargs)

    assert resumed.epochs == 3
    full_params, resumed_params = parameters(full.model), parameters(resumed.model)
    assert full_params.keys() == resumed_params.keys()
    for name in full_params:
        if device.type == "cpu":
            assert torch.equal(full_params[name], resumed_params[name]), name
        else:
            assert torch.allclose(full_params[name], resumed_params[name], atol=1e-5), name
    rows = read_csv(resumed.metrics_csv)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["train_elbo_nats"] == pytest.approx(b["train_elbo_nats"], abs=1e-4)


def test_resume_to_fewer_epochs_than_the_checkpoint_holds_raises(tmp_path):
    data = make_data(64, "cpu")
    kwargs = dict(batch_size=32, accelerator="cpu", progress=False, out_dir=tmp_path)
    fit(make_model("cpu"), data, epochs=2, **kwargs)
    with pytest.raises(ValueError, match=r"epochs: .* holds 2 epochs completed, more than the 1"):
        fit(make_model("cpu"), data, epochs=1, resume=True, **kwargs)
    assert fit(make_model("cpu"), data, epochs=2, resume=True, **kwargs).epochs == 2


def test_resume_keeps_the_schedule_and_batches_and_may_change_the_rate(tmp_path):
    data = make_data(64, "cpu")
    kwargs = dict(accelerator="cpu", progress=False, out_dir=tmp_path)
    fit(make_model("cpu"), data, epochs=1, batch_size=32, **kwargs)
    for changed, line in (
        (dict(batch_size=16), "batch_size=32, this run has batch_size=16"),
        (dict(batch_size=32, lr_schedule="cosine"), "lr_schedule='constant'"),
        (dict(batch_size=32, warmup_epochs=1.0), "warmup_epochs=0"),
    ):
        with pytest.raises(ValueError, match=line):
            fit(make_model("cpu"), data, epochs=2, resume=True, **changed, **kwargs)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt").epoch == 1
    resumed = fit(make_model("cpu"), data, epochs=2, batch_size=32, lr=0.5, resume=True, **kwargs)
    assert resumed.epochs == 2 and resumed.history[-1]["lr"] == 0.5


def test_out_dir_that_is_a_file_is_refused_before_training(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("")
    with pytest.raises(ValueError, match="out_dir: .* is a file, not a folder"):
        fit(make_model("cpu"), make_data(16, "cpu"), out_dir=afile, progress=False)
    # a folder under that file could only fail at the first save, once an epoch has trained
    with pytest.raises(ValueError, match=f"out_dir: .* cannot be made, {afile} is a file"):
        fit(make_model("cpu"), make_data(16, "cpu"), out_dir=afile / "run", progress=False)


@pytest.mark.parametrize(
    "argument, error, message",
    [
        (dict(out_dir=None), TypeError, "out_dir: expected a folder's path, got NoneType"),
        (
            dict(elbo=pyro.infer.Trace_ELBO),
            TypeError,
            r"elbo: .* got the class Trace_ELBO; pass Trace_ELBO\(\)",
        ),
        (dict(config=[1, 2]), TypeError, "config: expected a JSON-able dict, got list"),
    ],
)
def test_arguments_of_the_wrong_kind_are_refused_in_one_line(tmp_path, argument, error, message):
    kwargs = {"out_dir": tmp_path, "progress": False, **argument}
    with pytest.raises(error, match=message):
        fit(make_model("cpu"), make_data(16, "cpu"), **kwargs)
    assert not (tmp_path / "checkpoints").exists()


def test_resume_without_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        fit(make_model("cpu"), make_data(16, "cpu"), out_dir=tmp_path, resume=True, progress=False)


class CtrlCAt(Callback):
    """Delivers SIGINT to this process at a step, as Ctrl-C in a terminal does (or another
    signal, e.g. the SIGTERM of a scheduler)."""

    def __init__(self, epoch, step, signal_number=signal.SIGINT):
        self.epoch, self.step, self.signal_number = epoch, step, signal_number

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.step):
            os.kill(os.getpid(), self.signal_number)


def test_ctrl_c_raises_training_interrupted_and_keeps_the_completed_epochs(tmp_path):
    data = make_data(128, "cpu")
    kwargs = dict(epochs=4, batch_size=32, accelerator="cpu", progress=False)
    handler = signal.getsignal(signal.SIGINT)
    # BaseException: a bare KeyboardInterrupt escaping would stop the whole test session
    with pytest.raises(BaseException) as caught:
        fit(make_model("cpu"), data, out_dir=tmp_path, callbacks=[CtrlCAt(2, 1)], **kwargs)
    error = caught.value
    assert type(error) is TrainingInterrupted and isinstance(error, KeyboardInterrupt)
    assert (error.epoch, error.epochs, error.completed) == (3, 4, 2)
    assert str(error).startswith("training interrupted in epoch 3 of 4; ")
    assert load_checkpoint(error.checkpoint).epoch == 2
    assert len(read_csv(tmp_path / "metrics.csv")) == 2
    # Lightning ignores SIGINT from the interrupt on; fit gives Ctrl-C back
    assert signal.getsignal(signal.SIGINT) is handler
    resumed = fit(make_model("cpu"), data, out_dir=tmp_path, resume=True, **kwargs)
    assert resumed.epochs == 4 and [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]


def interrupted_fit(out_dir, callback, epochs, num_data=64):
    """The :class:`TrainingInterrupted` that ``fit`` raises when ``callback`` signals it."""
    # BaseException: a bare KeyboardInterrupt escaping would stop the whole test session
    with pytest.raises(BaseException) as caught:
        fit(
            make_model("cpu"),
            make_data(num_data, "cpu"),
            out_dir=out_dir,
            epochs=epochs,
            batch_size=32,
            progress=False,
            callbacks=[callback],
        )
    assert type(caught.value) is TrainingInterrupted
    return caught.value


def test_sigterm_raises_training_interrupted_that_names_it(tmp_path):
    handler = signal.getsignal(signal.SIGTERM)
    error = interrupted_fit(tmp_path, CtrlCAt(1, 1, signal.SIGTERM), epochs=3)
    assert error.signal_number == signal.SIGTERM
    # Lightning stops at its next check, once the step under way (or its epoch) is over
    assert error.completed >= 1 and error.epoch == error.completed + 1
    assert load_checkpoint(error.checkpoint).epoch == error.completed
    assert signal.getsignal(signal.SIGTERM) is handler


class SignalAtLastEpochEnd(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == trainer.max_epochs:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_as_the_last_epoch_ends_names_an_epoch_of_the_run(tmp_path):
    error = interrupted_fit(tmp_path, SignalAtLastEpochEnd(), epochs=2, num_data=32)
    assert error.epoch <= error.epochs == 2 and error.completed <= 2


def test_ctrl_c_in_the_first_epoch_names_no_checkpoint(tmp_path):
    error = interrupted_fit(tmp_path, CtrlCAt(0, 1), epochs=2)
    assert (error.completed, error.checkpoint) == (0, None)
    assert "no epoch was completed" in str(error)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    data = make_data(64, "cpu")
    kwargs = dict(batch_size=32, accelerator="cpu", progress=False)
    fit(make_model("cpu"), data, epochs=1, out_dir=tmp_path, **kwargs)
    path = tmp_path / "checkpoints" / "last.ckpt"
    before = path.read_bytes()

    def torn_save(obj, f, *args, **kwargs):
        f.write(before[:100])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        fit(make_model("cpu"), data, epochs=2, out_dir=tmp_path, resume=True, **kwargs)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert load_checkpoint(path).epoch == 1
    assert os.listdir(path.parent) == ["last.ckpt"]


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")

    fit(
        make_model("cpu"),
        make_data(32, "cpu"),
        epochs=1,
        batch_size=32,
        out_dir=tmp_path,
        accelerator="cpu",
        progress=False,
    )
    good = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    for path in (truncated, noise, foreign):
        with pytest.raises(ValueError, match="corrupt or not a pyromem checkpoint"):
            load_checkpoint(path)


def test_more_gpus_than_present_raises(tmp_path):
    wanted = torch.cuda.device_count() + 1
    if wanted < 2:
        wanted = 2
    with pytest.raises(ValueError, match=rf"asked for {wanted} GPUs.*found.*accelerator=\"cpu\""):
        fit(make_model("cpu"), make_data(16, "cpu"), out_dir=tmp_path, devices=wanted)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(train_data=[1, 2]), TypeError, "train_data"),
        (dict(train_data=torch.zeros(0, DIM)), ValueError, "train_data"),
        (dict(eval_data=[1.0]), TypeError, "eval_data"),
        (dict(epochs=0), ValueError, "epochs"),
        (dict(batch_size=1.5), ValueError, "batch_size"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(lr=0.0), ValueError, "lr"),
        (dict(gradient_clip_val=-1.0), ValueError, "gradient_clip_val"),
        (dict(epochs=2, warmup_epochs=3.0), ValueError, "warmup_epochs: .* epochs=2, got 3"),
        (dict(config={"f": object()}), TypeError, "config"),
        (dict(model=torch.nn.Linear(2, 2)), TypeError, "model"),
        (dict(elbo=pyro.optim.Adam({})), TypeError, "elbo"),
    ],
)
def test_argument_errors(tmp_path, kwargs, error, match):
    arguments = dict(model=make_model("cpu"), train_data=make_data(8, "cpu"))
    arguments.update(kwargs)
    model, train_data = arguments.pop("model"), arguments.pop("train_data")
    with pytest.raises(error, match=match):
        fit(model, train_data, out_dir=tmp_path, progress=False, **arguments)


def test_jit_elbo_with_module_local_params_raises():
    with pyro.settings.context(module_local_params=True):
        with pytest.raises(TypeError, match="elbo: .*JitTrace_ELBO.*use Trace_ELBO"):
            SVIModule(make_model("cpu"), 8, pyro.infer.JitTrace_ELBO())


def test_jit_elbo_equals_trace_elbo_on_a_last_smaller_batch(device):
    # Pyro's jit keys its trace on the number of arguments, not their shapes: the trace
    # of the batch of 32 must also score the last batch of 10 (its plate's scale included)
    from pyromem.models import VAE

    x = torch.bernoulli(torch.full((42, 1, 8, 8), 0.3, device=device))
    vae = VAE((1, 8, 8), latent_dim=3, hidden=(16,)).to(device)
    jit = SVIModule(vae, 42, pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True))
    plain = SVIModule(vae, 42, pyro.infer.Trace_ELBO())
    with pyro.validation_enabled(False):
        for batch in (x[:32], x[32:]):
            jit.training_step(batch, 0)  # compiles: draws of its own
        for batch in (x[:32], x[32:]):
            losses = []
            for module in (jit, plain):
                pyro.set_rng_seed(1)
                losses.append(module.training_step(batch, 0).item())
            assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.parametrize(
    "elbo",
    [pyro.infer.TraceMeanField_ELBO(), pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)],
    ids=lambda elbo: type(elbo).__name__,
)
def test_svi_module_with_other_elbo_and_plain_trainer(tmp_path, elbo):
    data = make_data(64, "cpu")
    module = SVIModule(make_model("cpu"), len(data), elbo, lr=1e-2)
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    trainer.fit(module, loader)
    assert torch.isfinite(trainer.callback_metrics["train_elbo_nats"])


DDP_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_train import make_data, make_model
    from pyromem.train import fit

    result = fit(make_model("cpu"), make_data(64, "cpu"), epochs=2, batch_size=16,
                 out_dir={out!r}, accelerator="cpu", devices=2, strategy="ddp", progress=False)
    # one write: a pipe keeps writes under PIPE_BUF whole, where print's pieces from two
    # ranks could interleave (unbuffered stdout), were the other rank to return too
    os.write(1, f"EPOCHS {{result.epochs}} {{len(result.history)}}\\n".encode())
    """
)


def test_ddp_on_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.dirname(__file__), out=str(tmp_path / "out")))
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # only rank 0 returns from fit: what follows it runs once
    assert completed.stdout.splitlines() == ["EPOCHS 2 2"]
    assert load_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt").epoch == 2
