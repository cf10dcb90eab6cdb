"""Overhead of the training engine, :func:`pyromem.train.fit`, against a hand loop.

Both train the same model and guide (pyromem's MLP VAE 784-400-50, Bernoulli)
with the same ``Trace_ELBO`` loss, Adam at 1e-3, batches of ``--batch-size``
drawn in a fresh random order every epoch, over ``--num-data`` MNIST-sized
binary images for ``--epochs`` epochs, with Pyro's validation off. The hand
loop is the plain PyTorch loop of Pyro's examples; the engine adds Lightning,
the divergence guard, per-epoch metrics and an atomic checkpoint after every
epoch, and no evaluation (``eval_data=None``). The engine also runs with
``JitTrace_ELBO`` (``pyromem train vae --jit``), whose speed-up is reported
(``--no-jit`` leaves it out). The hand loop runs as in a process without
Lightning: importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, under
which torch's Adam opens the NVML library on every step (its CUDA-graph check),
so the benchmark unsets it around the hand loop. Beside them, the hand loop's step
as a plain ``LightningModule`` trained by a bare Lightning ``Trainer`` (no
callbacks, checkpoints or logger, the engine's batches) measures what Lightning's
loop costs alone; its cost per step with a step that costs next to nothing
(:class:`TrivialStep`, ``--floor-steps`` steps, against the same step by hand) gives the
lowest ratio to the fused hand loop that any engine inside Lightning's loop can reach on
this workload (``lightning_floor_over_fused_hand_loop``). Times are the whole runs' wall
times divided by their steps, hand loop and engine taken alternately in one process; the figure
is the median over ``--repeats`` of the ratio of each pair, beside the ratio of
the median times. The engine's own fixed costs are reported apart: set-up (the
data check, Lightning's) before the first step, and what follows the last
(the wait for the last checkpoint, Lightning's teardown). Where a step's time goes
(``phases_ms_per_step``, the median over repeats of each run's median): in the fused hand
loop, the bare Lightning loop and the engine, from the batch's start to the backward (the
ELBO, ``zero_grad``, Lightning's closure), the backward, the update (the optimiser; in the
engine the divergence guard too) and the time between one step's end and the next one's
start (the next batch's fetch, the loop's bookkeeping), timed by hooks
(:class:`StepPhases`) or by hand. The machine's load
average at the start and the end is printed too: on a shared machine the
figures are only as good as it was quiet.

    python benchmarks/engine_overhead.py [--epochs 10] [--repeats 3] [--threads 1] [--device cuda]

prints one JSON object.
"""

import json
import logging
import os
import statistics
import tempfile
import time
from contextlib import contextmanager

import arguments
import lightning
import pyro
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from pyromem.models import VAE
from pyromem.train import fit
from pyromem.train.seeding import EpochShuffleBatches, EpochShuffleSampler


def median_spans_ms(starts, ends):
    """The median of ``end - start`` over pairs of wall times, in milliseconds."""
    return 1e3 * statistics.median(end - start for start, end in zip(starts, ends, strict=True))


class StepPhases(Callback):
    """Wall times of every step's hooks: the first step's start, the last step's end, and the
    median milliseconds of each phase of a step (on a GPU, the host's side: no hook waits
    for the device). The first callback of a list, it times the others' hooks in the phase
    that follows."""

    def __init__(self):
        self.marks = {hook: [] for hook in ("start", "backward", "after", "update", "end")}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.marks["start"].append(time.perf_counter())

    def on_before_backward(self, trainer, pl_module, loss):
        self.marks["backward"].append(time.perf_counter())

    def on_after_backward(self, trainer, pl_module):
        self.marks["after"].append(time.perf_counter())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.marks["update"].append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.marks["end"].append(time.perf_counter())

    @property
    def first(self):
        return self.marks["start"][0]

    @property
    def last(self):
        return self.marks["end"][-1]

    def phases_ms(self):
        marks = self.marks
        return {
            # training_step (the ELBO), Lightning's closure and zero_grad
            "to_backward": median_spans_ms(marks["start"], marks["backward"]),
            "backward": median_spans_ms(marks["backward"], marks["after"]),
            "to_update": median_spans_ms(marks["after"], marks["update"]),
            # the other callbacks' hooks (the engine's divergence guard) and the optimiser
            "update": median_spans_ms(marks["update"], marks["end"]),
            # the next batch's fetch and the loop's bookkeeping
            "between_steps": median_spans_ms(marks["end"][:-1], marks["start"][1:]),
        }


class Rows(Dataset):
    """The rows of a tensor, a batch of them per index tensor."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index]


class HandStep(lightning.LightningModule):
    """The hand loop's step as a plain LightningModule."""

    def __init__(self, vae, num_data):
        super().__init__()
        self.vae, self.num_data = vae, num_data
        self.loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)

    def training_step(self, batch, batch_idx):
        return self.loss_fn(batch, num_data=self.num_data) / self.num_data

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3, fused=True)


class TrivialStep(lightning.LightningModule):
    """A step that costs next to nothing (three parameters, a four-number batch): run by
    Lightning's loop, what remains is the loop's own cost per step."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch.mean()).sum()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3, fused=True)


def lightning_step_cost_ms(steps, device, repeats):
    """Milliseconds per step that Lightning's bare loop adds to a hand loop over the same
    trivial step and the same ``DataLoader``: the median over ``repeats`` of each pair."""
    batches = [torch.ones(4, device=device)] * steps

    def by_lightning():
        trainer = lightning.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        start = time.perf_counter()
        trainer.fit(TrivialStep().to(device), DataLoader(batches, batch_size=None))
        return time.perf_counter() - start

    def by_hand():
        module = TrivialStep().to(device)
        optimizer = module.configure_optimizers()
        start = time.perf_counter()
        for batch in DataLoader(batches, batch_size=None):
            optimizer.zero_grad()
            module.training_step(batch, 0).backward()
            optimizer.step()
        return time.perf_counter() - start

    return statistics.median(1e3 * (by_lightning() - by_hand()) / steps for _ in range(repeats))


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-data", type=arguments.positive_int, default=4000)
    parser.add_argument("--epochs", type=arguments.positive_int, default=10)
    parser.add_argument("--batch-size", type=arguments.positive_int, default=128)
    parser.add_argument("--repeats", type=arguments.positive_int, default=3)
    arguments.add_threads(parser)
    parser.add_argument("--no-jit", action="store_true", help="leave out the JitTrace_ELBO runs")
    parser.add_argument(
        "--floor-steps",
        type=arguments.positive_int,
        default=2000,
        help="steps of the trivial step that measures Lightning's own cost per step",
    )
    arguments.add_device(parser)
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    arguments.set_threads(args.threads)
    load_before = os.getloadavg()
    generator = torch.Generator().manual_seed(0)
    data = torch.bernoulli(torch.full((args.num_data, 1, 28, 28), 0.3), generator=generator)
    steps = args.epochs * -(-args.num_data // args.batch_size)
    if steps < 2:
        parser.error(f"--num-data, --batch-size and --epochs give {steps} step; the phases need 2")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def model():
        torch.manual_seed(0)
        return VAE((1, 28, 28), latent_dim=50, hidden=(400,)).to(device)

    @contextmanager
    def without_lightnings_nvml_check():
        value = os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        try:
            yield
        finally:
            if value is not None:
                os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = value

    def hand_loop(fused=None):
        vae = model()
        x_all = data.to(device)
        loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)
        optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=fused)
        # the hooks of StepPhases, stamped by hand (well under a microsecond each)
        timed = StepPhases()
        marks = timed.marks
        start = time.perf_counter()
        with pyro.validation_enabled(False), without_lightnings_nvml_check():
            for _ in range(args.epochs):
                for index in torch.randperm(len(x_all)).split(args.batch_size):
                    batch = x_all[index]
                    marks["start"].append(time.perf_counter())
                    optimizer.zero_grad()
                    loss = loss_fn(batch, num_data=len(x_all)) / len(x_all)
                    marks["backward"].append(time.perf_counter())
                    loss.backward()
                    marks["after"].append(time.perf_counter())
                    marks["update"].append(time.perf_counter())
                    optimizer.step()
                    marks["end"].append(time.perf_counter())
        sync()
        return (time.perf_counter() - start) / steps, timed.phases_ms()

    def lightning_loop(phases):
        module = HandStep(model(), len(data))
        timed = StepPhases()
        batches = EpochShuffleBatches(EpochShuffleSampler(len(data), 0), args.batch_size, False)
        loader = DataLoader(Rows(data), batch_size=None, sampler=batches)
        start = time.perf_counter()
        with pyro.validation_enabled(False), without_lightnings_nvml_check():
            trainer = lightning.Trainer(
                accelerator="gpu" if device.type == "cuda" else "cpu",
                devices=1,
                max_epochs=args.epochs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[timed],
            )
            trainer.fit(module, train_dataloaders=loader)
        sync()
        phases.append(timed.phases_ms())
        return (time.perf_counter() - start) / steps

    def engine(elbo=None, phases=None):
        vae = model()
        steps_seen = StepPhases()
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            fit(
                vae,
                data,
                out_dir=out,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=1e-3,
                elbo=elbo,
                accelerator="gpu" if device.type == "cuda" else "cpu",
                progress=False,
                callbacks=[steps_seen],
            )
            sync()
            end = time.perf_counter()
        fixed = (steps_seen.first - start, end - steps_seen.last)
        if phases is not None:
            phases.append(steps_seen.phases_ms())
        return (end - start) / steps, fixed

    for name in ("lightning.pytorch", "lightning.fabric"):  # its device and tips lines
        logging.getLogger(name).setLevel(logging.WARNING)
    hand, hand_fused, bare, fitted, fixed, jitted = [], [], [], [], [], []
    phases = {"fused_hand_loop": [], "lightning_loop": [], "engine": []}
    for _ in range(args.repeats):
        hand.append(hand_loop()[0])
        per_step, hand_phases = hand_loop(fused=True)
        hand_fused.append(per_step)
        phases["fused_hand_loop"].append(hand_phases)
        bare.append(lightning_loop(phases["lightning_loop"]))
        per_step, costs = engine(phases=phases["engine"])
        fitted.append(per_step)
        fixed.append(costs)
        if not args.no_jit:
            jitted.append(engine(pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True))[0])
    with without_lightnings_nvml_check():
        loop_cost_ms = lightning_step_cost_ms(args.floor_steps, device, args.repeats)
    fused_ms = 1e3 * statistics.median(hand_fused)
    hand_ms, engine_ms = 1e3 * statistics.median(hand), 1e3 * statistics.median(fitted)
    ratios = [e / h for e, h in zip(fitted, hand, strict=True)]
    fused_ratios = [e / h for e, h in zip(fitted, hand_fused, strict=True)]
    bare_ratios = [b / h for b, h in zip(bare, hand_fused, strict=True)]
    jit = {}
    if jitted:
        jit_ms = 1e3 * statistics.median(jitted)
        jit = {"engine_jit_ms_per_step": jit_ms, "jit_speedup": engine_ms / jit_ms}
    print(
        json.dumps(
            {
                "benchmark": "engine_overhead",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "workload": f"MLP VAE 784-400-50, {args.num_data} images, batch "
                f"{args.batch_size}, {args.epochs} epochs, no eval data, median of {args.repeats}",
                "hand_loop_ms_per_step": hand_ms,
                "engine_ms_per_step": engine_ms,
                "engine_over_hand_loop": statistics.median(ratios),
                "engine_over_hand_loop_each_repeat": ratios,
                "ratio_of_median_times": engine_ms / hand_ms,
                "fused_hand_loop_ms_per_step": fused_ms,
                "engine_over_fused_hand_loop": statistics.median(fused_ratios),
                "engine_over_fused_hand_loop_each_repeat": fused_ratios,
                "fused_hand_loop_ms_each_repeat": [1e3 * t for t in hand_fused],
                "engine_ms_each_repeat": [1e3 * t for t in fitted],
                "lightning_loop_ms_per_step": 1e3 * statistics.median(bare),
                "lightning_loop_over_fused_hand_loop": statistics.median(bare_ratios),
                "engine_over_lightning_loop": statistics.median(
                    e / b for e, b in zip(fitted, bare, strict=True)
                ),
                # Lightning's cost per step with a trivial step, and the ratio to the fused hand
                # loop that an engine inside Lightning's loop cannot go below on this workload
                "lightning_loop_cost_ms_per_step": loop_cost_ms,
                "lightning_floor_over_fused_hand_loop": (fused_ms + loop_cost_ms) / fused_ms,
                "phases_ms_per_step": {
                    loop: {
                        phase: statistics.median(run[phase] for run in runs) for phase in runs[0]
                    }
                    for loop, runs in phases.items()
                },
                "engine_setup_s": statistics.median(f[0] for f in fixed),
                "engine_after_last_step_s": statistics.median(f[1] for f in fixed),
                **jit,
                "target": 1.10,
                "torch_threads": torch.get_num_threads(),
                "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
            }
        )
    )


if __name__ == "__main__":
    main()
