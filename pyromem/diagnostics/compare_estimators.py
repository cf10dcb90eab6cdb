r"""The estimators of a discrete address compared: gradient bias and variance, step time.

For a :class:`~pyromem.models.VMA` at one parameter point, a batch of queries x and a
memory M of |M| slots, each estimator of :mod:`pyromem.infer.address_estimators` draws
gradients :math:`\hat g` of its loss with respect to the *address's parameters*
:math:`\phi_a`, those of the query net h^q of q(a | x) (with the MLP nets they reach
nothing else, so each estimator's gradient for them is its estimate of the address's
gradient). Each is compared with :math:`g^*`, the gradient of the objective it estimates,
with the address summed out exactly:

- ``enum``, ``nvil``, ``gumbel``: the ELBO, :math:`g^* = \nabla_\phi \sum_a q(a|x)\,
  E_{q(z|x,a)}[\log p(x, a, z) - \log q(a, z | x)]` (|M| terms). The Gumbel-softmax
  estimator optimises a relaxed ELBO; its bias here is that of the relaxation against the
  discrete ELBO it stands for.
- ``vimco``: the IWAE-K bound, summed over all :math:`|M|^K` tuples of K addresses,
  :math:`g^* = \nabla_\phi \sum_{a_{1:K}} \prod_k q(a_k|x)\, E_z[\log \frac1K \sum_k w_k]`,
  where :math:`|M|^K` is at most ``max_tuples``; otherwise no reference (``None``).
- ``rws``: its wake-φ objective for the address, :math:`-\mathrm{KL}(p(a|x) \| q(a|x))`,
  :math:`g^* = \nabla_\phi \sum_a p(a | x) \log q(a | x)` with the exact posterior over
  slots :math:`p(a|x) \propto p(a)\, p(x | a)`, each :math:`p(x|a)` an IWAE of
  ``posterior_samples`` draws of z. RWS's self-normalised K-particle estimate of it is
  biased; the bias shown is that.

The z inside each reference is still sampled, so :math:`g^*` is averaged over at least
``reference_draws`` independent draws (replicates of the batch, in two passes or more:
datapoints are independent), and :math:`E[\hat g]` over ``mean_draws`` in one pass.
Reported per estimator:

- ``relative_bias`` :math:`\|E\hat g - g^*\| / \|g^*\|`, beside ``relative_bias_noise``,
  the size that Monte Carlo error alone gives it (:math:`\sqrt{\mathrm{tr\,Var}\,\hat g /
  R + \mathrm{tr\,Var}\, g^*_1 / R^*} / \|g^*\|`): a bias below it is not resolved;
- ``relative_std`` :math:`\sqrt{E\|\hat g - E\hat g\|^2} / \|g^*\|` of one gradient
  (one batch), from ``gradient_draws`` draws;
- ``step_ms``: the median time of one training step (forward, backward, Adam), and
  ``step_ms_repeats`` the time of each of the ``step_repeats`` steps timed (the figure's
  whiskers span them).

NVIL's baseline is first fitted for ``baseline_steps`` steps at the parameter point (its
own parameters only), as it would be during training. The soft-attention baseline has no
address and is not compared here.
"""

import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyro.poutine as poutine
import torch
from matplotlib.figure import Figure

from pyromem.checks import as_int
from pyromem.diagnostics.particles import log_ratio, particle_traces
from pyromem.diagnostics.plots import save_figure
from pyromem.infer.address_estimators import address_objective
from pyromem.models.vma import VMA

ESTIMATORS = ("enum", "vimco", "rws", "nvil", "gumbel")
#: A relative bias at most this many times its Monte Carlo noise is not told from 0 (the plot).
RESOLVED = 2.0
OBJECTIVES = {
    "enum": "ELBO",
    "nvil": "ELBO",
    "gumbel": "ELBO (discrete; the estimator's is relaxed)",
    "vimco": "IWAE-K",
    "rws": "wake-phi: -KL(p(a|x) || q(a|x))",
}


@dataclass
class EstimatorComparison:
    """The figures of :func:`compare_estimators`, one row per estimator.

    :ivar list rows: dicts with ``estimator``, ``objective``, ``relative_bias``,
        ``relative_bias_noise``, ``relative_std``, ``step_ms`` (``None`` where not measured)
        and ``step_ms_repeats``, the times of the steps whose median is ``step_ms``.
    :ivar dict settings: the sizes and draws used.
    """

    rows: list
    settings: dict = field(default_factory=dict)

    def table(self):
        """The rows as a Markdown table."""

        def cell(value, digits=3):
            return "–" if value is None else f"{value:.{digits}g}"

        lines = [
            "| estimator | objective compared | relative bias | MC noise of it "
            "| relative std | step (ms) | test NLL (nats) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in self.rows:
            objective = row["objective"].replace("|", "\\|")  # a cell of a Markdown table
            lines.append(
                f"| {row['estimator']} | {objective} | {cell(row['relative_bias'])} "
                f"| {cell(row['relative_bias_noise'])} | {cell(row['relative_std'])} "
                f"| {cell(row['step_ms'])} | {cell(row.get('test_nll_nats'), 4)} |"
            )
        return "\n".join(lines)

    def to_json(self, path):
        """Write rows and settings as JSON at ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": self.rows, "settings": self.settings}, indent=2))
        return path

    def plot(self, path, title=None):
        """Relative bias (beside its Monte Carlo noise) and relative std as points on log axes,
        step time as bars (the median) with whiskers from the fastest to the slowest timed
        step where ``step_ms_repeats`` is kept; returns the path. A bias within
        :data:`RESOLVED` times its noise is drawn hollow: the run does not tell it from 0.

        :param str title: the figure's title (default: :meth:`title`, the setting from
            :attr:`settings`).
        """
        return save_figure(self.figure(title), path)

    def figure(self, title=None):
        """The matplotlib :class:`~matplotlib.figure.Figure` of :meth:`plot`, not saved."""
        names = [row["estimator"] for row in self.rows]
        figure = Figure(figsize=(10, 4.2))
        figure.suptitle(self.title() if title is None else title, fontsize=9)
        axes = figure.subplots(1, 3)
        repeats = {len(row.get("step_ms_repeats") or ()) for row in self.rows} - {0}
        timed = "/".join(str(n) for n in sorted(repeats)) or "the"
        panels = (
            ("relative_bias", "relative bias ‖E ĝ − g*‖ / ‖g*‖"),
            ("relative_std", "relative std of one gradient"),
            (
                "step_ms",
                f"training step (ms): median of {timed} timed steps"
                + (",\nwhisker: fastest to slowest" if repeats else ""),
            ),
        )
        for ax, (key, title) in zip(axes, panels, strict=True):
            values = [row[key] if row[key] is not None else math.nan for row in self.rows]
            if key == "step_ms":
                ax.bar(names, values, color="tab:blue")
                for i, row in enumerate(self.rows):
                    times = row.get("step_ms_repeats")
                    if times:
                        low, high = min(times), max(times)
                        median = values[i]
                        ax.errorbar(
                            i, median, yerr=[[median - low], [high - median]], fmt="none",
                            ecolor="black", capsize=4, lw=1,
                        )  # fmt: skip
            elif key == "relative_std":
                # a bar's length on a log axis depends on where the axis starts: points
                ax.plot(names, values, "o", color="tab:blue", markersize=7)
            else:
                noise = [row["relative_bias_noise"] or math.nan for row in self.rows]
                pairs = list(zip(values, noise, strict=True))
                # the norm of pure Monte Carlo error spreads about its typical size, more so
                # when a few directions carry the variance: resolved only well beyond it
                above = [v if v > RESOLVED * n else math.nan for v, n in pairs]
                within = [v if v <= RESOLVED * n else math.nan for v, n in pairs]
                ax.plot(
                    names, above, "o", color="tab:blue", markersize=7,
                    label=f"resolved (> {RESOLVED:g} × MC noise)",
                )  # fmt: skip
                ax.plot(
                    names, within, "o", markerfacecolor="white", markeredgecolor="tab:blue",
                    markersize=7, label=f"not told from 0 (≤ {RESOLVED:g} × MC noise)",
                )  # fmt: skip
                ax.plot(names, noise, "k_", markersize=18, label="MC noise")
                # below the axes: inside, it hides whichever point lies under it
                ax.legend(
                    fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False
                )
            if key != "step_ms":
                _log_axis(ax)
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="x", labelsize=8)
        return figure

    def title(self):
        """The figure's title: the setting in :attr:`settings`, the parts of it held there."""
        s = self.settings
        head = "Address estimators of a VMA"
        if s.get("train_steps"):
            head += f" trained {s['train_steps']} steps (address enumerated)"
        if s.get("dataset"):
            side = s.get("image_size")
            head += f" on `{s['dataset']}`" + (f" ({side}×{side})" if side else "")
        if s.get("classes") and s.get("shots"):
            head += f", one {s['classes']}-class × {s['shots']}-shot episode of test classes"
        parts = [
            text.format(s[key])
            for key, text in (
                ("memory_size", "|M| = {} slots"),
                ("batch", "{} queries"),
                ("num_particles", "K = {}"),
                ("temperature", "τ = {:g}"),
                ("parameters", "gradients for {}"),
                ("mean_draws", "E ĝ of {} replicates"),
                ("reference_draws", "g* of {}"),
                ("gradient_draws", "std from {} draws"),
                ("seed", "seed {}"),
            )
            if s.get(key) is not None
        ]
        return head + ("\n" + ", ".join(parts) if parts else "")


def _log_axis(ax):
    """A log y axis labelled in plain numbers at 1, 2 and 5 × 10ⁿ (every decade alone when
    the data span more than two), with no minor labels, and grid lines at the labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    subs = (1.0, 2.0, 5.0) if 0 < low and high / low <= 100 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="y", which="major", alpha=0.3)


def _address_parameters(vma):
    return list(vma.addressing.query_net.parameters())


def _gradient(loss, parameters):
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    pairs = zip(parameters, grads, strict=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in pairs])


def _replicate(x, copies):
    return x.repeat((copies,) + (1,) * (x.dim() - 1))


def slot_log_weights(vma, x, memory, num_particles):
    r"""For every slot a, ``num_particles`` draws :math:`z \sim q(z | x, a)` and their
    :math:`l = \log p(x, a, z) - \log q(a | x) - \log q(z | x, a)`.

    :returns: ``(log_weight, log_q)`` of shapes ``(num_particles, N, B)`` and ``(N, B)``,
        differentiable in the parameters.
    """
    n, b = len(memory), len(x)
    slots = {"a": torch.arange(n, device=x.device).repeat_interleave(b).expand(num_particles, -1)}
    # a observed in both programs: log_ratio gives log p(x, a, z) - log q(z | x, a)
    model, guide = poutine.condition(vma.model, slots), poutine.condition(vma.guide, slots)
    model_trace, guide_trace = particle_traces(
        model, guide, (_replicate(x, n),), {"memory": memory}, num_particles, 1
    )
    site = guide_trace.nodes["a"]
    log_q = site["fn"].log_prob(site["value"]).reshape(num_particles, n, b)
    log_weight = log_ratio(model_trace, guide_trace, 1).reshape(num_particles, n, b) - log_q
    return log_weight, log_q[0]


def exact_bound(vma, x, memory, num_particles=1, max_tuples=65536):
    r"""The K-sample bound with the addresses summed out over all :math:`|M|^K` tuples
    (K = 1: the ELBO), z drawn once per slot and particle; summed over the batch.

    An unbiased estimate, in z, of :math:`\sum_b \mathcal{L}_K(x_b)` whose gradient is that
    of the bound with the address enumerated.

    :raises ValueError: if :math:`|M|^K` exceeds ``max_tuples``.
    """
    n, k = len(memory), num_particles
    if n**k > max_tuples:
        raise ValueError(f"max_tuples: |M|^K = {n}^{k} exceeds {max_tuples}")
    log_weight, log_q = slot_log_weights(vma, x, memory, k)
    tuples = torch.tensor(list(itertools.product(range(n), repeat=k)), device=x.device)
    # (K, T, B): particle k's log-weight at the tuple's k-th address
    per_particle = torch.stack([log_weight[i, tuples[:, i]] for i in range(k)])
    bound = torch.logsumexp(per_particle, 0) - math.log(k)
    log_p_tuple = log_q[tuples].sum(1)  # (T, B)
    return (log_p_tuple.exp() * bound).sum()


def wake_phi_target(vma, x, memory, posterior_samples=256):
    r""":math:`\sum_b \sum_a p(a | x_b) \log q(a | x_b)`, the exact posterior over slots held
    fixed (:math:`p(x | a)` from ``posterior_samples`` draws of z per slot)."""
    with torch.no_grad():
        log_weight, log_q = slot_log_weights(vma, x, memory, posterior_samples)
        log_joint = torch.logsumexp(log_weight, 0) - math.log(posterior_samples) + log_q
        posterior = log_joint.softmax(0)
    keys = vma.addressing.keys(memory)
    log_q = vma.addressing.posterior_logits(keys, x).log_softmax(-1).T
    return (posterior * log_q).sum()


def _reference(estimator, vma, x, memory, parameters, draws, num_particles, options):
    """The mean of ``draws`` replicate gradients of the estimator's objective's loss (minus
    the objective), and the trace of the variance of one replicate's gradient."""
    k = num_particles if estimator == "vimco" else 1
    if estimator == "vimco" and len(memory) ** k > options["max_tuples"]:
        return None, None
    if estimator == "rws":
        target = wake_phi_target(vma, x, memory, options["posterior_samples"])
        return _gradient(-target, parameters), 0.0
    # chunks of replicates, each a few million tuple terms at most
    per_copy = len(memory) ** k * k * len(x)
    copies = max(1, min(draws, 2**22 // per_copy))
    chunks = max(2, math.ceil(draws / copies))
    means = torch.stack(
        [
            _gradient(-exact_bound(vma, _replicate(x, copies), memory, k), parameters) / copies
            for _ in range(chunks)
        ]
    )
    return means.mean(0), (means.var(0) * copies).sum().item()


def _build(vma, estimator, temperature):
    model = VMA(**{**vma.config, "address": estimator})
    model.load_state_dict(vma.state_dict(), strict=False)
    model.temperature = temperature
    return model.to(next(vma.parameters()).device).train()


def _fit_baseline(model, loss_fn, x, memory, steps):
    optimizer = torch.optim.Adam(model.baseline.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(x, memory=memory).backward()
        optimizer.step()
    model.zero_grad()


def step_ms(model, loss_fn, x, memory, repeats):
    """The median milliseconds of one training step (forward, backward, Adam) of ``loss_fn``
    (an ELBO module of ``model``) on ``x`` and ``memory``, over ``repeats`` after a warm-up."""
    return 1000 * statistics.median(_step_seconds(model, loss_fn, x, memory, repeats))


def step_row(model, loss_fn, x, memory, repeats):
    """``{"step_ms": the median, "step_ms_repeats": every timed step}`` in milliseconds, of
    :func:`step_ms` from one set of timed steps."""
    seconds = _step_seconds(model, loss_fn, x, memory, repeats)
    return {
        "step_ms": 1000 * statistics.median(seconds),
        "step_ms_repeats": [1000 * t for t in seconds],
    }


def _step_seconds(model, loss_fn, x, memory, repeats):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss_fn(x, memory=memory).backward()
        optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def compare_estimators(
    vma,
    x,
    memory,
    estimators=ESTIMATORS,
    num_particles=4,
    gradient_draws=100,
    mean_draws=1000,
    reference_draws=1000,
    posterior_samples=256,
    temperature=0.5,
    baseline_steps=200,
    max_tuples=65536,
    step_repeats=5,
    progress=None,
):
    r"""Bias and variance of each address estimator's gradient, and its step time.

    :param VMA vma: the model at the parameter point, with ``net="mlp"``; copies of it with
        each estimator's address are measured, ``vma`` itself is left unchanged.
    :param torch.Tensor x: queries ``(B,) + input_shape``.
    :param torch.Tensor memory: the memory ``(N,) + memory_shape``.
    :param tuple estimators: names of :data:`ESTIMATORS`.
    :param int num_particles: K of VIMCO and RWS (and of VIMCO's IWAE-K reference).
    :param int gradient_draws: gradients drawn for each estimator's variance.
    :param int mean_draws: replicates of the batch averaged for its mean gradient.
    :param int reference_draws: replicates averaged for the enumerated reference.
    :param int posterior_samples: draws of z per slot of RWS's exact posterior over slots.
    :param float temperature: τ of the Gumbel-softmax estimator.
    :param int baseline_steps: steps fitting NVIL's baseline before it is measured.
    :param int max_tuples: the largest :math:`|M|^K` enumerated for VIMCO's reference.
    :param int step_repeats: timed training steps (after one warm-up).
    :param progress: called with a line after each estimator, or ``None``.
    :returns: an :class:`EstimatorComparison`.
    :raises ValueError: for an unknown estimator, a ``vma`` that is not an MLP VMA, a
        ``temperature`` not positive or a count out of range (``num_particles`` below 2 with
        ``vimco`` or ``rws``, a draw count or ``step_repeats`` below 2, ``posterior_samples``
        or ``max_tuples`` below 1, ``baseline_steps`` negative), naming it, before any
        estimator is measured.
    """
    unknown = [name for name in estimators if name not in ESTIMATORS]
    if unknown:
        raise ValueError(f"estimators: expected names of {ESTIMATORS}, got {unknown[0]!r}")
    if not isinstance(vma, VMA) or vma.net != "mlp":
        raise ValueError("vma: expected a VMA with net='mlp' (its query net reaches q(a|x) only)")
    for name, value in (
        ("gradient_draws", gradient_draws),
        ("mean_draws", mean_draws),
        ("reference_draws", reference_draws),
        ("step_repeats", step_repeats),
    ):
        as_int(value, name, 2, form="expected")
    # the others too, before the first estimator's measurement: each is read only by the
    # estimator that needs it, after the minutes spent on those before it
    if {"vimco", "rws"} & set(estimators):
        as_int(num_particles, "num_particles", 2, form="expected")
    as_int(posterior_samples, "posterior_samples", 1, form="expected")
    as_int(baseline_steps, "baseline_steps", 0, form="expected")
    as_int(max_tuples, "max_tuples", 1, form="expected")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive float, got {temperature!r}")
    options = {"max_tuples": max_tuples, "posterior_samples": posterior_samples}
    rows = []
    for estimator in estimators:
        start = time.perf_counter()
        model = _build(vma, estimator, temperature)
        loss_fn = address_objective(estimator, num_particles)(model.model, model.guide)
        if estimator == "nvil":
            _fit_baseline(model, loss_fn, x, memory, baseline_steps)
        parameters = _address_parameters(model)
        # the reference at the discrete model (eval mode: no relaxation)
        model.eval()
        reference, reference_var = _reference(
            estimator, model, x, memory, parameters, reference_draws, num_particles, options
        )
        model.train()
        draws = torch.stack(
            [_gradient(loss_fn(x, memory=memory), parameters) for _ in range(gradient_draws)]
        )
        variance = draws.var(0).sum().item()
        copies = _replicate(x, mean_draws)
        mean = _gradient(loss_fn(copies, memory=memory), parameters) / mean_draws
        row = {"estimator": estimator, "objective": OBJECTIVES[estimator]}
        if reference is None:
            row.update(relative_bias=None, relative_bias_noise=None, relative_std=None)
        else:
            scale = reference.norm().item()
            noise = variance / mean_draws + reference_var / reference_draws
            row.update(
                relative_bias=(mean - reference).norm().item() / scale,
                relative_bias_noise=math.sqrt(noise) / scale,
                relative_std=math.sqrt(variance) / scale,
            )
        row.update(step_row(model, loss_fn, x, memory, step_repeats))
        rows.append(row)
        if progress is not None:
            progress(f"{estimator}: {time.perf_counter() - start:.1f} s")
    settings = {
        "memory_size": len(memory),
        "batch": len(x),
        "num_particles": num_particles,
        "gradient_draws": gradient_draws,
        "mean_draws": mean_draws,
        "reference_draws": reference_draws,
        "posterior_samples": posterior_samples,
        "temperature": temperature,
        "baseline_steps": baseline_steps,
        "parameters": "the query net h^q of q(a|x)",
    }
    return EstimatorComparison(rows, settings)
