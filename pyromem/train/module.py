"""A Lightning module that trains a Pyro model and guide by stochastic variational inference."""

import lightning
import pyro
import pyro.distributions
import pyro.infer
import pyro.poutine
import torch

from pyromem.checks import as_int
from pyromem.train.batches import datapoints, model_arguments
from pyromem.train.schedules import LearningRateFactor
from pyromem.train.seeding import reseed_epoch

#: Key of pyromem's own entries in a Lightning checkpoint.
CHECKPOINT_KEY = "pyromem"

# Pyro's jit-compiled ELBOs look parameters up in the global param store, which
# module-local parameters bypass: they would fail with a KeyError on the first step.
_JIT_ELBOS = (
    pyro.infer.JitTrace_ELBO,
    pyro.infer.JitTraceEnum_ELBO,
    pyro.infer.JitTraceGraph_ELBO,
    pyro.infer.JitTraceMeanField_ELBO,
)


# values that cannot be a parameter, a buffer or a submodule
_PLAIN_TYPES = (str, int, float, bool, type(None))


# torch optimisers with a fused kernel, the same update as their default implementation
_FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)


def _fused_kernels_apply(parameters: list[torch.Tensor]) -> bool:
    """Whether torch's fused optimiser kernels take every one of ``parameters``: real
    floating-point tensors on a CPU or a CUDA device (those pyromem is tested on)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)


def _no_graph_capture_check() -> None:
    """Stands in for an optimiser's CUDA-graph capture check when it trains CPU tensors."""


class SVIModule(lightning.LightningModule):
    """Train ``model.model`` / ``model.guide`` by minimising a Pyro ELBO loss.

    This is the pattern of Pyro's Lightning example: ``elbo(model.model, model.guide)``
    is an ``nn.Module`` whose loss a torch optimiser minimises over the model's
    own parameters, so Lightning and DDP train it like any torch module, with
    Pyro's global parameter store or with ``module_local_params``.

    The batch is the model's argument list (:mod:`pyromem.train.batches`): a
    tensor ``x``, a tuple of positional or a dict of keyword arguments. With
    ``num_data`` = N the items are datapoints of a training set of N: the loss is
    ``elbo.differentiable_loss(*args, **kwargs, num_data=N) / N``, so the model's
    ``pyro.plate("data", num_data)`` over the batch makes it an unbiased
    estimate for the whole dataset, per datapoint. With ``num_data=None`` each
    batch is a whole step's arguments (an episode such as ``(memory, x)``),
    passed as they are, and the loss is divided by the batch's B datapoints
    (its ``x``). Either way the logged ``train_elbo_nats`` is per datapoint.

    Every training epoch starts from torch/pyro/numpy/random seeds derived from
    ``(seed, epoch, global_rank)``, so a resumed run retraces an uninterrupted
    one. Pyro validation is off while training (it costs time on every step)
    and restored afterwards.

    :param model: a :class:`~pyro.nn.PyroModule` with methods ``model(x, num_data=None)``
        and ``guide(x, num_data=None)``; ``x`` has shape ``[B, ...]``.
    :param int num_data: size N of the training set, or ``None`` when every batch is
        one episode passed to the model as it is.
    :param elbo: a Pyro ELBO instance (default :class:`~pyro.infer.Trace_ELBO`)
        with ``differentiable_loss``, e.g. ``TraceMeanField_ELBO``,
        ``TraceGraph_ELBO``, ``TraceEnum_ELBO``, ``JitTrace_ELBO``. The ``Jit*``
        ELBOs read parameters from Pyro's global param store, so they need a model
        that reads every parameter through it, and Pyro's ``module_local_params``
        setting off.
    :param float lr: learning rate (the peak rate of a schedule).
    :param optimizer: a ``torch.optim.Optimizer`` class, called as
        ``optimizer(parameters, lr=lr, weight_decay=weight_decay)`` on the
        parameters that require a gradient. ``torch.optim.Adam`` and ``AdamW``
        get ``fused=True`` too when every parameter is a floating-point tensor on
        a CPU or a CUDA device: the same update in one pass over each parameter.
    :param str lr_schedule: ``"constant"``, ``"cosine"`` or ``"one-cycle"``
        (:mod:`pyromem.train.schedules`), stepped after every optimiser step.
    :param float warmup_epochs: epochs of the schedule's warm-up.
    :param float weight_decay: the optimiser's weight decay (Adam: an L2 penalty).
    :param bool drop_labels: batches are ``(image, label)``: train on the image.
    :param int seed: base seed of the per-epoch reseeding.
    :param dict config: a JSON-able dict stored in every checkpoint (e.g. how to
        rebuild the model).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        num_data: int,
        elbo: pyro.infer.ELBO | None = None,
        *,
        lr: float = 1e-3,
        optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        lr_schedule: str = "constant",
        warmup_epochs: float = 0.0,
        weight_decay: float = 0.0,
        seed: int = 0,
        config: dict | None = None,
        drop_labels: bool = False,
    ):
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model: expected a pyro.nn.PyroModule, got {type(model).__name__}")
        for method in ("model", "guide"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"model: expected a module with a callable .{method}(x, num_data=None), "
                    f"got {type(model).__name__} without one"
                )
        as_int(num_data, "num_data", 1, form="expected", allow_none=True)
        if elbo is None:
            elbo = pyro.infer.Trace_ELBO()
        if isinstance(elbo, type):
            raise TypeError(
                f"elbo: expected a Pyro ELBO instance, got the class {elbo.__name__}; "
                f"pass {elbo.__name__}()"
            )
        if not callable(getattr(elbo, "differentiable_loss", None)):
            raise TypeError(
                f"elbo: expected a Pyro ELBO with differentiable_loss, got {type(elbo).__name__}"
            )
        if isinstance(elbo, _JIT_ELBOS) and pyro.settings.get("module_local_params"):
            raise TypeError(
                "elbo: expected an ELBO that trains module-local parameters, got "
                f"{type(elbo).__name__}, which reads Pyro's global param store; "
                f"use {type(elbo).__name__.removeprefix('Jit')} instead"
            )
        if not 0 < lr < torch.finfo(torch.float32).max:
            raise ValueError(f"lr: expected a positive float below 3.4e38, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay: expected a float >= 0, got {weight_decay!r}")
        if not warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs: expected a float >= 0, got {warmup_epochs!r}")
        LearningRateFactor(lr_schedule, 1)  # checks the name before any training
        self.model = model
        self.loss_fn = elbo(model.model, model.guide)
        self.num_data = num_data
        # plain floats: a NumPy scalar in the optimiser's state would make the checkpoint
        # unreadable by torch.load(weights_only=True)
        self.lr = float(lr)
        self.optimizer = optimizer
        self.lr_schedule, self.warmup_epochs = lr_schedule, float(warmup_epochs)
        self.weight_decay = float(weight_decay)
        self.drop_labels = drop_labels
        # the loss of the step in progress, for the divergence guard
        self.last_loss: torch.Tensor | None = None
        self._elbo_sum, self._elbo_count, self._epoch_elbo = torch.zeros(()), 0, None
        self.seed = seed
        self.config = {} if config is None else config
        # One dict per completed epoch, filled by the fit engine's metrics callback
        # and carried in checkpoints so a resumed run continues it.
        self.history: list[dict] = []
        self._validation_before: tuple[bool, bool, bool] | None = None

    def __setattr__(self, name, value):
        # Lightning sets plain attributes (the name of the hook it runs, ...) dozens of times
        # a step, and nn.Module.__setattr__ checks each value against the parameter, buffer
        # and submodule types (about 1 % of a VAE step); a plain value under a name that is
        # none of those is stored as nn.Module would store it
        state = self.__dict__
        if (
            type(value) in _PLAIN_TYPES
            and "_parameters" in state
            and name not in state["_parameters"]
            and name not in state["_buffers"]
            and name not in state["_modules"]
        ):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def training_step(self, batch, batch_idx):
        args, kwargs = model_arguments(batch, self.drop_labels)
        size = datapoints(args, kwargs)
        if self.num_data is None:
            loss = self.loss_fn(*args, **kwargs) / size
        else:
            loss = self.loss_fn(*args, **kwargs, num_data=self.num_data) / self.num_data
        self.last_loss = loss.detach()
        # the epoch's datapoint-weighted mean ELBO, summed here rather than through
        # self.log on every step, which costs milliseconds a step
        self._elbo_sum = self._elbo_sum - self.last_loss * size
        self._elbo_count += size
        return loss

    def train_elbo(self) -> float:
        """The mean training ELBO per datapoint of the epoch so far, over every rank."""
        if self._epoch_elbo is None:
            total = torch.stack([self._elbo_sum, self._elbo_sum.new_tensor(self._elbo_count)])
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            self._epoch_elbo = (total[0] / total[1]).item()
        return self._epoch_elbo

    def on_train_epoch_end(self):
        # already the mean over every rank: sync_dist averages equal numbers, once an epoch
        self.log("train_elbo_nats", self.train_elbo(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        parameters = [p for p in self.parameters() if p.requires_grad]
        options = dict(lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer in _FUSED_OPTIMIZERS and _fused_kernels_apply(parameters):
            # the same update as torch's default, in one pass over each parameter rather
            # than a dozen: on a CPU 2.5x faster, about 12 % of an MLP VAE's step
            options["fused"] = True
        optimizer = self.optimizer(parameters, **options)
        if all(p.device.type == "cpu" for p in parameters):
            # torch's Adam checks on every step that no CUDA graph is capturing it, through
            # torch.cuda.is_available(), which under Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1
            # opens the NVML library anew each time (~0.2 ms a step, 2 % of a VAE step on a
            # CPU); no CUDA graph captures a step on CPU tensors
            optimizer._accelerator_graph_capture_health_check = _no_graph_capture_check
        if self.lr_schedule == "constant" and self.warmup_epochs == 0:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        warmup = round(self.warmup_epochs * total / self.trainer.max_epochs)
        factor = LearningRateFactor(self.lr_schedule, total, warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_train_start(self):
        # A resumed run restores the optimiser's and schedule's state, rates included:
        # the rates asked for now win (the same ones retrace the run exactly).
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr / group.get("initial_lr", group["lr"])
                group["weight_decay"] = self.weight_decay
                if "initial_lr" in group:
                    group["initial_lr"] = self.lr
        for config in self.trainer.lr_scheduler_configs:
            config.scheduler.base_lrs = [self.lr] * len(config.scheduler.base_lrs)
        self._validation_before = (
            pyro.infer.is_validation_enabled(),
            pyro.distributions.is_validation_enabled(),
            pyro.poutine.is_validation_enabled(),
        )
        pyro.enable_validation(False)

    def on_train_epoch_start(self):
        reseed_epoch(self.seed, self.current_epoch, self.global_rank)
        self._elbo_sum = torch.zeros((), device=self.device)
        self._elbo_count, self._epoch_elbo = 0, None

    def on_train_end(self):
        self.restore_pyro_validation()

    def restore_pyro_validation(self) -> None:
        """Restore the Pyro validation flags that :meth:`on_train_start` turned off.

        Lightning calls no ``LightningModule`` hook when training stops on an
        exception, so a caller of ``trainer.fit`` should call this in a ``finally``.
        Does nothing if the flags are already restored.
        """
        if self._validation_before is not None:
            infer_on, dist_on, poutine_on = self._validation_before
            pyro.infer.enable_validation(infer_on)
            pyro.distributions.enable_validation(dist_on)
            pyro.poutine.enable_validation(poutine_on)
            self._validation_before = None

    def on_save_checkpoint(self, checkpoint):
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": 1,
            "config": self.config,
            "history": self.history,
            # Checkpoints are written in on_train_epoch_end, where the finished epoch
            # counts as processed but not yet as completed.
            "epochs_completed": self.trainer.fit_loop.epoch_progress.current.processed,
        }

    def on_load_checkpoint(self, checkpoint):
        self.history = list(checkpoint[CHECKPOINT_KEY]["history"])
