r"""Several guides of one model side by side: bounds, gaps and PSIS diagnostics per image.

For a model :math:`p(x, z)` and guides :math:`q_g(z \mid x)`, Cremer et al. (2018) split the
distance of a guide's ELBO from the evidence into

.. math::

    \log p(x) - \mathcal{L}[q_\phi]
    = \underbrace{\log p(x) - \mathcal{L}[q^*]}_{\text{approximation gap}}
    + \underbrace{\mathcal{L}[q^*] - \mathcal{L}[q_\phi]}_{\text{amortisation gap}},

where :math:`q_\phi` is the amortised guide and :math:`q^*` the best guide of the family for
each datapoint, here approximated by the best of the guides compared (e.g. a
:class:`~pyromem.infer.GaussianRefinement` of the amortised one). :func:`compare_guides`
reports per guide the ELBO, each latent site's KL, the IWAE-K bound, the effective sample
size, PSIS :math:`\hat k` (Yao et al. 2018), the ELBO's gain over the amortised reference,
and the approximation gap, with :math:`\log p(x)` either given exactly or estimated by the
highest IWAE-K bound. Everything is per datapoint in nats.

Every gap is a mean over the datapoints of differences taken datapoint by datapoint (paired:
the guides differ by tenths of a nat where the datapoints' :math:`\log p(x)` spread over
nats), reported with its standard error (:func:`paired_mean_se`). The ELBOs are Monte Carlo
estimates of ``num_particles`` draws each, so two runs of one guide differ by about that
error: read a gap smaller than two standard errors as no difference.

Point-mass guides (:class:`~pyromem.infer.MAPRefinement` and the other Delta guides) have no
density: their "ELBO" is the log joint :math:`\log p(x, \hat z)` at the point (the entropy
taken as 0), which is not a bound on :math:`\log p(x)`, and their IWAE and :math:`\hat k` are
undefined. They are reported, marked, and left out of the best ELBO, the best IWAE and the
choice of the amortisation reference.

A guide whose importance log-ratios are not finite (NaN or +inf: a diverged guide) has a NaN
IWAE and :math:`\hat k` (:func:`~pyromem.diagnostics.pareto_khat`): the table shows ``nan``
and counts its datapoints as :math:`\hat k \ge 0.7`, the figure writes their number, and it
is never the best.

References:

[1] Cremer, Li, Duvenaud. "Inference Suboptimality in Variational Autoencoders." ICML 2018.
[2] Yao, Vehtari, Simpson, Gelman. "Yes, but Did It Work?: Evaluating Variational
    Inference." ICML 2018.
"""

import math
from dataclasses import dataclass, field

import pyro.poutine as poutine
import torch

from pyromem.checks import as_int
from pyromem.diagnostics.elbo_decomposition import elbo_decomposition
from pyromem.diagnostics.log_likelihood import chunked_log_weights, importance_bound
from pyromem.diagnostics.particles import is_point_guide, observed_sites, trial_traces
from pyromem.diagnostics.plots import save_figure
from pyromem.diagnostics.psis import MIN_DRAWS, THRESHOLDS, khat_summary, pareto_khat


@dataclass
class GuideComparison:
    """Per-datapoint figures of each guide, in nats.

    :ivar elbo: a dict guide → ELBO, shape ``(B,)`` (the log joint at the point for a
        point guide).
    :ivar kl: a dict guide → {latent site → KL, shape ``(B,)``}.
    :ivar iwae: a dict guide → IWAE-K bound, shape ``(B,)`` (absent for point guides).
    :ivar ess: a dict guide → effective sample size of the K draws, shape ``(B,)``.
    :ivar pareto_k: a dict guide → PSIS :math:`\\hat k`, shape ``(B,)``.
    :ivar log_evidence: :math:`\\log p(x)`, exact or the best IWAE-K, a tensor ``(B,)``.
    :ivar log_evidence_source: ``"exact"`` or ``"IWAE-K of <guide>"``, a str.
    :ivar amortized: the reference guide of the amortisation gap (one with a density),
        a str.
    :ivar point: the point-mass guides, a list.
    :ivar num_samples: K, an int.
    :ivar num_particles: the guide draws of each ELBO, an int.
    """

    elbo: dict
    kl: dict
    iwae: dict
    ess: dict
    pareto_k: dict
    log_evidence: torch.Tensor
    log_evidence_source: str
    amortized: str
    point: list = field(default_factory=list)
    num_samples: int = 0
    num_particles: int = 0

    @property
    def best(self):
        """The guide of highest mean ELBO among those with a density (a NaN or +inf ELBO
        last)."""
        candidates = [g for g in self.elbo if g not in self.point]
        return max(candidates, key=lambda g: _mean_or_minus_inf(self.elbo[g]))

    def amortization_gap(self, guide):
        """ELBO of ``guide`` − ELBO of the amortised reference, shape ``(B,)``."""
        return self.elbo[guide] - self.elbo[self.amortized]

    @property
    def approximation_gap(self):
        """:math:`\\log p(x)` − the best guide's ELBO, shape ``(B,)``."""
        return self.log_evidence - self.elbo[self.best]

    def summary(self):
        """Means over the datapoints, JSON-able."""
        guides = {}
        for g in self.elbo:
            amortization, amortization_se = paired_mean_se(self.amortization_gap(g))
            to_evidence, to_evidence_se = paired_mean_se(self.log_evidence - self.elbo[g])
            row = {
                "elbo_nats": self.elbo[g].mean().item(),
                "kl": {s: v.mean().item() for s, v in self.kl[g].items()},
                "amortization_gap_nats": amortization,
                "amortization_gap_se_nats": amortization_se,
                "gap_to_log_evidence_nats": to_evidence,
                "gap_to_log_evidence_se_nats": to_evidence_se,
                "point_mass": g in self.point,
            }
            if g in self.iwae:
                row["iwae_nats"] = self.iwae[g].mean().item()
                row["ess"] = self.ess[g].mean().item()
                row.update(khat_summary(self.pareto_k[g]))
            guides[g] = row
        approximation, approximation_se = paired_mean_se(self.approximation_gap)
        return {
            "guides": guides,
            "amortized": self.amortized,
            "best": self.best,
            "log_evidence_nats": self.log_evidence.mean().item(),
            "log_evidence_source": self.log_evidence_source,
            "approximation_gap_nats": approximation,
            "approximation_gap_se_nats": approximation_se,
            "num_samples": self.num_samples,
            "num_particles": self.num_particles,
            "num_datapoints": len(self.log_evidence),
            "khat_thresholds": list(THRESHOLDS),
        }

    def table(self):
        """A Markdown table of :meth:`summary`, one row per guide."""
        summary = self.summary()
        sites = sorted({s for row in summary["guides"].values() for s in row["kl"]})
        header = (
            ["guide", "ELBO"]
            + [f"KL({s})" for s in sites]
            + [f"IWAE-{self.num_samples}", "amort. gap", "log p(x) − ELBO", "k̂ mean", "k̂ ≥ 0.7"]
        )
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for g, row in summary["guides"].items():
            name = f"{g} (point: log p(x, ẑ))" if row["point_mass"] else g
            name += " (ref.)" if g == self.amortized else ""
            cells = [name, f"{row['elbo_nats']:.2f}"]
            cells += [f"{row['kl'].get(s, math.nan):.2f}" for s in sites]
            if "iwae_nats" in row:
                cells.append(f"{row['iwae_nats']:.2f}")
            else:
                cells.append("–")
            cells += [
                f"{row['amortization_gap_nats']:+.2f} ± {row['amortization_gap_se_nats']:.2f}",
                f"{row['gap_to_log_evidence_nats']:.2f} ± {row['gap_to_log_evidence_se_nats']:.2f}",
            ]
            if "khat_mean" in row:
                unreliable = f"{row['khat_frac_ge_0.7']:.0%}"
                if row["khat_frac_nan"] > 0:
                    unreliable += f" ({row['khat_frac_nan']:.0%} NaN)"
                cells += [f"{row['khat_mean']:.2f}", unreliable]
            else:
                cells += ["–", "–"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            f"Per datapoint in nats, means over {summary['num_datapoints']} datapoints "
            f"± standard error of the paired differences; ELBO with "
            f"{self.num_particles} draws (analytic KL where registered), IWAE-{self.num_samples}. "
            f"log p(x) = {summary['log_evidence_nats']:.2f} ({self.log_evidence_source}); "
            f"approximation gap (log p(x) − ELBO of {summary['best']}) = "
            f"{summary['approximation_gap_nats']:.2f} ± "
            f"{summary['approximation_gap_se_nats']:.2f}; "
            f"amortisation gap relative to {self.amortized} (a gap within two standard errors of 0 "
            f"cannot be told from Monte Carlo noise); k̂ ≥ 0.7: importance sampling unreliable "
            f"(0.5-0.7: usable; NaN: non-finite log-ratios, counted as ≥ 0.7)."
        )
        return "\n".join(lines)

    def plot(self, path, dataset=None, split=None, model=None):
        """A figure: how far below :math:`\\log p(x)` each guide's bounds lie, the mean over
        the datapoints of the paired gaps with its standard error (left), and each guide's
        :math:`\\hat k` per datapoint against 0.5 and 0.7 (right), with the number of
        datapoints whose :math:`\\hat k` is NaN written where there are any. Its title names
        the data and N, the number of datapoints; where :math:`\\log p(x)` is a guide's
        IWAE-K, that guide's square is hollow and labelled: it is 0 by construction. Writes a
        PNG to ``path`` (``.png`` appended when it has no suffix) and returns the path of the
        file written (:func:`~pyromem.diagnostics.plots.save_figure`).

        :param str dataset: the data's name, for the title (optional).
        :param str split: its split, e.g. ``"test"``, for the title (optional).
        :param str model: the model's name, for the title (optional).
        """
        return save_figure(self.figure(dataset, split, model), path)

    def figure(self, dataset=None, split=None, model=None):
        """The matplotlib :class:`~matplotlib.figure.Figure` of :meth:`plot`, not saved."""
        from matplotlib.figure import Figure

        names = list(self.elbo)
        fig = Figure(figsize=(10, 4.1))
        left, right = fig.subplots(1, 2)
        positions = torch.arange(len(names), dtype=torch.float64)
        fig.suptitle(self.title(dataset, split, model), fontsize=9)
        # the guide whose IWAE-K stands for log p(x): its gap is 0 by construction
        prefix = f"IWAE-{self.num_samples} of "
        defining = self.log_evidence_source.removeprefix(prefix)
        if not self.log_evidence_source.startswith(prefix) or defining not in self.iwae:
            defining = None

        def gap(bound):
            # paired with log p(x) datapoint by datapoint (paired_mean_se)
            return paired_mean_se(self.log_evidence - bound)

        shown = set()

        def draw(x, bound, fmt, color, label, **style):
            mean, error = gap(bound)
            left.errorbar(
                x, mean, yerr=error, fmt=fmt, color=color, capsize=3,
                label=None if label in shown else label, **style,
            )  # fmt: skip
            shown.add(label)
            return mean + error

        iwae = f"IWAE-{self.num_samples}"
        tops = []
        for i, g in enumerate(names):
            if g not in self.point:
                tops.append(draw(i - 0.1, self.elbo[g], "o", "C0", "ELBO"))
            if g in self.iwae and g != defining:
                tops.append(draw(i + 0.1, self.iwae[g], "s", "C1", iwae))
            elif g == defining:
                draw(
                    i + 0.1, self.iwae[g], "s", "C1",
                    f"{iwae} of {g}: log p(x) itself, 0 by construction",
                    markerfacecolor="white",
                )  # fmt: skip
        top, clipped = max(tops, default=0.0), False
        for i, g in enumerate(names):
            if g in self.point:
                draw(i, self.elbo[g], "D", "C2", "log p(x, ẑ) of a point guide (no bound)")
                mean = gap(self.elbo[g])[0]
                if top > 0 and mean > 2 * top:
                    # far above the bounds: its value at the top, so the bounds keep their scale
                    left.annotate(f"{mean:.2f} ↑", (i, 1.25 * top), ha="center", color="C2")
                    clipped = True
        if clipped:
            left.set_ylim(top=1.4 * top)
        left.axhline(0.0, color="k", ls="--", lw=1, label="0: log p(x) itself")
        left.set_xlim(-0.5, len(names) - 0.5)
        left.set_xticks(positions.tolist(), names, rotation=20)
        left.set_ylabel("log p(x) − bound, nats")
        left.set_title(f"bounds below log p(x) ({self.log_evidence_source})", fontsize=8)
        # below the axes: inside, it would hide points
        left.legend(**_below(left))
        for g in self.pareto_k:
            k = self.pareto_k[g].cpu()
            # one colour: the left panel's colours name the bounds, not the guides
            x = torch.full_like(k, float(names.index(g)))
            right.plot(x, k, "o", color="C7", alpha=0.4, ms=3)
            undefined = int(k.isnan().sum())
            if undefined:  # plot draws no NaN: say how many
                right.text(
                    names.index(g), 0.9, f"k̂ NaN\n{undefined}/{len(k)}", ha="center",
                    va="center", color="C3", transform=right.get_xaxis_transform(),
                )  # fmt: skip
        for g in self.point:  # a point mass has no importance weights to fit
            right.text(
                names.index(g), 0.5, "no k̂\n(point guide)", ha="center", va="center",
                transform=right.get_xaxis_transform(), bbox={"fc": "white", "ec": "none"},
                fontsize=8,
            )  # fmt: skip
        right.set_xlim(-0.5, len(names) - 0.5)
        usable, unreliable = THRESHOLDS
        lines = (
            (usable, "k", ":", f"k̂ = {usable:g}: below, importance sampling reliable"),
            (
                unreliable,
                "C3",
                "-.",
                f"k̂ = {unreliable:g}: {usable:g}–{unreliable:g} usable; above, unreliable",
            ),
        )
        for threshold, color, style, label in lines:
            right.axhline(threshold, color=color, ls=style, lw=1.2, label=label)
        bottom, top = right.get_ylim()
        right.set_ylim(bottom, max(top, unreliable + 0.1))  # the 0.7 line off the frame
        right.set_xticks(positions.tolist(), names, rotation=20)
        right.set_ylabel("PSIS k̂ per datapoint")
        right.set_title(f"PSIS k̂ of the {self.num_samples} importance draws", fontsize=8)
        right.legend(**_below(right))
        return fig

    def title(self, dataset=None, split=None, model=None):
        """The figure's title: the data (where named), N and the draws behind each number."""
        n = len(self.log_evidence)
        where = " ".join(
            part for part in (dataset and f"`{dataset}`", split and f"{split} split") if part
        )
        head = (f"Guides of `{model}`" if model else "Guides compared") + (
            f" on {where}" if where else ""
        )
        return (
            f"{head}: N = {n} datapoint{'s' if n != 1 else ''}\n"
            f"ELBO from {self.num_particles} draws, IWAE-{self.num_samples}; "
            f"log p(x): {self.log_evidence_source}; means of paired per-datapoint gaps ± s.e."
        )


def compare_guides(
    model,
    guides,
    data,
    num_samples=1000,
    num_particles=10,
    amortized=None,
    log_evidence=None,
    chunk_size=250,
    **kwargs,
):
    """Compare ``guides`` of ``model`` on ``data``.

    :param callable model: a Pyro model ``model(x, **kwargs)`` with its sites in the data plate.
    :param dict guides: name → guide of ``model`` (e.g. the amortised guide and refinements).
    :param torch.Tensor data: B datapoints.
    :param int num_samples: K of the IWAE-K bound and of the PSIS fit, ≥ 30.
    :param int num_particles: the guide draws of each ELBO.
    :param str amortized: the reference of the amortisation gap, a guide with a density
        (default: the first guide that is not a point mass; naming a point guide is an error).
    :param torch.Tensor log_evidence: the exact :math:`\\log p(x)`, a finite tensor of shape
        ``(B,)``, if known; otherwise the highest IWAE-K bound stands for it.
    :param int chunk_size: importance samples drawn per vectorised pass, ≥ 1.
    :param kwargs: further keyword arguments of the model and guides.
    :rtype: GuideComparison
    :raises ValueError: for a wrong argument, naming it; when every guide is a point mass
        (there is no amortisation reference, nor bound on :math:`\\log p(x)`).
    :raises TypeError: if a guide is not callable.
    """
    if not isinstance(guides, dict) or not guides:
        raise ValueError(f"guides must be a non-empty dict of name → guide, got {guides!r}")
    for name, guide in guides.items():
        if not callable(guide):
            raise TypeError(f"guide {name!r} must be callable, got {type(guide).__name__}")
    if amortized is not None and amortized not in guides:
        raise ValueError(f"amortized must name one of the guides {list(guides)}, got {amortized!r}")
    if not isinstance(data, torch.Tensor) or data.dim() < 1 or len(data) == 0:
        raise ValueError(f"data must be a tensor of B >= 1 datapoints, got {data!r:.80}")
    for name, value in (("num_samples", num_samples), ("num_particles", num_particles)):
        as_int(value, name, 1)
    if num_samples < MIN_DRAWS:
        raise ValueError(f"num_samples must be >= {MIN_DRAWS} for the PSIS fit, got {num_samples}")
    as_int(chunk_size, "chunk_size", 1)
    _check_log_evidence(log_evidence, len(data))
    _check_data(model, data, kwargs)
    point = [
        name for name, guide in guides.items() if _check_guide(model, guide, name, data, kwargs)
    ]
    with_density = [name for name in guides if name not in point]
    if not with_density:
        raise ValueError(
            f"every guide is a point mass ({point}): compare_guides needs a guide with a "
            f"density, as the amortisation reference and for a bound on log p(x)"
        )
    if amortized is None:
        amortized = with_density[0]
    elif amortized in point:
        raise ValueError(
            f"amortized must name a guide with a density, got the point guide {amortized!r} "
            f"(its log p(x, ẑ) is no ELBO); guides with a density: {with_density}"
        )
    result = GuideComparison(
        {}, {}, {}, {}, {}, None, "", amortized, point, num_samples, num_particles
    )
    for name, guide in guides.items():
        parts = elbo_decomposition(model, guide, data, num_particles=num_particles, **kwargs)
        result.elbo[name], result.kl[name] = parts.elbo, parts.kl
        if name in result.point:
            continue
        log_weight, _ = chunked_log_weights(model, guide, data, num_samples, chunk_size, **kwargs)
        iwae, ess = importance_bound(log_weight)
        # a +inf log-ratio would make the IWAE +inf, above every other guide's bound
        diverged = (log_weight.isnan() | (log_weight == math.inf)).any(0)
        result.iwae[name] = iwae.masked_fill(diverged, math.nan)
        result.ess[name] = ess.masked_fill(diverged, math.nan)
        result.pareto_k[name] = pareto_khat(log_weight)
    if log_evidence is not None:
        result.log_evidence, result.log_evidence_source = log_evidence, "exact"
    else:
        best = max(result.iwae, key=lambda g: _mean_or_minus_inf(result.iwae[g]))
        result.log_evidence = result.iwae[best]
        result.log_evidence_source = f"IWAE-{num_samples} of {best}"
    return result


def _below(ax):
    """Keyword arguments of ``ax.legend`` that put it under the axes' (rotated) tick labels,
    where it hides no point: a fixed distance below the axes, whatever the figure's height."""
    from matplotlib.transforms import ScaledTranslation

    below = ScaledTranslation(0, -0.55, ax.figure.dpi_scale_trans)
    return {
        "fontsize": 7,
        "loc": "upper center",
        "bbox_to_anchor": (0.5, 0.0),
        "bbox_transform": ax.transAxes + below,
        "frameon": False,
    }


def paired_mean_se(values):
    """The mean of per-datapoint differences ``values`` (shape ``(B,)``) and its standard
    error, std / √B, as floats: the one estimate of a gap's uncertainty in the table, the
    summary and the figure. One datapoint has no estimate of its spread: NaN, not 0, which
    would make any gap look significant."""
    error = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return values.mean().item(), error


def _mean_or_minus_inf(values):
    # a NaN or +inf ELBO or IWAE is a diverged guide's, ranked below every finite one
    mean = values.mean().item()
    return mean if mean < math.inf else -math.inf


def _check_log_evidence(log_evidence, batch):
    if log_evidence is None:
        return
    if not isinstance(log_evidence, torch.Tensor) or tuple(log_evidence.shape) != (batch,):
        got = (
            f"a tensor of shape {tuple(log_evidence.shape)}"
            if isinstance(log_evidence, torch.Tensor)
            else f"a {type(log_evidence).__name__}"
        )
        raise ValueError(
            f"log_evidence must be a tensor of shape ({batch},), one log p(x) per datapoint, "
            f"got {got}"
        )
    if not log_evidence.is_floating_point() or not torch.isfinite(log_evidence).all():
        bad = int((~torch.isfinite(log_evidence.double())).sum())
        raise ValueError(
            f"log_evidence must be finite floats, got {log_evidence.dtype} with {bad} "
            f"non-finite value(s)"
        )


def _check_data(model, data, kwargs):
    """An error naming the site when the model's observed sites do not take ``data``."""
    try:
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(model).get_trace(data, **kwargs)
    except RuntimeError as error:
        raise ValueError(
            f"data of shape {tuple(data.shape)} does not fit the model: {error}"
        ) from error
    for site in observed_sites(trace):
        fn, value = trace.nodes[site]["fn"], trace.nodes[site]["value"]
        event = tuple(fn.event_shape)
        try:
            torch.broadcast_shapes(value.shape, fn.shape())
            fits = (
                value.dim() >= len(event)
                and tuple(value.shape)[value.dim() - len(event) :] == event
            )
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"data of shape {tuple(data.shape)} does not fit the model's observed site "
                f"{site!r}, which expects batch shape {tuple(fn.batch_shape)} and event shape "
                f"{event}"
            )


def _check_guide(model, guide, name, data, kwargs):
    """An error naming the site for a guide without the model's latent sites
    (:func:`~pyromem.diagnostics.particles.check_sites`); returns whether the guide is a
    point mass at any of them (:func:`~pyromem.diagnostics.particles.is_point_guide`)."""
    with torch.no_grad():
        return is_point_guide(*trial_traces(model, guide, (data,), kwargs, name))
