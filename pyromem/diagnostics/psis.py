r"""Pareto-smoothed importance sampling diagnostics of a guide, and export to arviz.

A guide :math:`q(z \mid x)` is a proposal for the posterior :math:`p(z \mid x)`. With K draws
:math:`z_k \sim q` and importance ratios :math:`r_k = p(x, z_k) / q(z_k \mid x)`, Yao et al.
(2018) fit a generalised Pareto distribution to the largest ratios; its shape :math:`\hat k`
says how heavy the ratios' tail is, i.e. how far the guide is from the posterior where it
matters for importance sampling:

- :math:`\hat k < 0.5`: the ratios have finite variance; the guide is close to the posterior
  and importance-sampled estimates (IWAE-K, posterior expectations) are reliable;
- :math:`0.5 \le \hat k < 0.7`: finite mean but infinite variance; PSIS estimates are still
  usable;
- :math:`\hat k \ge 0.7`: the estimates are unreliable, whatever K.

The fit is arviz's (``arviz.psislw`` of arviz 0.x, the ``azstats.psislw`` accessor of
arviz_stats in arviz ≥ 1), applied to each datapoint's K log-ratios with relative efficiency 1
(the draws are independent).

:func:`to_inference_data` exports a guide's posterior draws, the model's posterior-predictive
draws at them, the observed data, the pointwise log-likelihood, the log-ratios and
:math:`\hat k` to arviz's data structure (``InferenceData`` on arviz 0.x, ``DataTree`` on
arviz ≥ 1), so that ``az.summary`` and arviz's plots apply.

arviz is imported inside the functions, so ``import pyromem.diagnostics`` stays fast.

References:

[1] Yao, Vehtari, Simpson, Gelman. "Yes, but Did It Work?: Evaluating Variational
    Inference." ICML 2018.
[2] Vehtari, Simpson, Gelman, Yao, Gabry. "Pareto Smoothed Importance Sampling." JMLR 2024.
"""

import math
import warnings

import torch

from pyromem.checks import as_int
from pyromem.diagnostics.particles import (
    is_point_guide,
    latent_sites,
    log_ratio,
    max_plate_nesting,
    observed_sites,
    particle_traces,
    site_log_prob,
)
from pyromem.infer.traces import per_datapoint
from pyromem.models.plates import DATA_PLATE

THRESHOLDS = (0.5, 0.7)
CONSTANT_SPREAD = 1e-6  # nats
# ... or this many units of rounding (eps) of the largest finite log-ratio, if more: a float32
# exact proposal's log-ratios of a few nats spread by some 1e-6 nats of rounding alone
ROUNDING_ULPS = 1000
# The tail fitted is the largest floor(K / 5) ratios for K <= 225 (arviz >= 1; ceil on arviz
# 0.x). arviz 0.x fits no tail of fewer than 5 draws (inf), arviz >= 1 raises below 5 and
# returns nan at exactly 5 (K = 25..29, measured with arviz_stats 1.3.3): 6 draws, K >= 30.
MIN_DRAWS = 30


def _arviz_major():
    import arviz

    return int(arviz.__version__.split(".")[0])


def _psis_khat(log_ratios):
    """arviz's k̂ of each row of ``log_ratios``, a numpy array of shape ``(B, K)``."""
    with warnings.catch_warnings():
        # arviz warns, per datapoint, about the k̂ it has just been asked to compute
        warnings.simplefilter("ignore")
        if _arviz_major() < 1:
            import arviz

            return arviz.psislw(log_ratios, reff=1.0)[1]
        import arviz_stats  # noqa: F401  (registers the ``azstats`` accessor)
        import xarray

        # arviz_stats' psislw takes log-likelihoods, the negated log-ratios of LOO
        negated = xarray.DataArray(-log_ratios, dims=("datapoint", "draw"))
        return negated.azstats.psislw(dim="draw", r_eff=1.0)[1].values


def pareto_khat(log_weights):
    r""":math:`\hat k` of each datapoint's importance ratios.

    :param torch.Tensor log_weights: :math:`\log r_k`, shape ``(K, B)`` (as
        :func:`~pyromem.diagnostics.log_importance_weights` returns them), K ≥ 30, of a
        floating-point dtype.
    :returns: :math:`\hat k`, shape ``(B,)``, on the device and dtype of ``log_weights``;
        0 for a datapoint whose K log-ratios agree to within 1e-6 nats or the dtype's
        rounding of their size (:data:`ROUNDING_ULPS`), if more (an exact proposal);
        NaN for a datapoint with no tail to fit because its log-ratios are not all numbers:
        one of them NaN or +inf (a diverged guide or model) or all of them -inf (every
        weight zero). NaN is no score rather than a good one: it propagates through means
        and maxima (:func:`khat_summary`, :func:`~pyromem.diagnostics.compare_guides`),
        and such a datapoint counts as unreliable. Some -inf among finite log-ratios are
        zero weights, and fitted.
    :raises ValueError: if ``log_weights`` is not a floating-point tensor of shape ``(K, B)``
        with K ≥ 30.
    """
    if not isinstance(log_weights, torch.Tensor) or log_weights.dim() != 2:
        got = getattr(log_weights, "shape", log_weights)
        raise ValueError(f"log_weights must be a tensor of shape (K, B), got {got}")
    if not log_weights.is_floating_point():
        raise ValueError(
            f"log_weights must be a floating-point tensor (log-ratios), got {log_weights.dtype}"
        )
    if log_weights.shape[0] < MIN_DRAWS:
        raise ValueError(
            f"log_weights needs K >= {MIN_DRAWS} draws to fit a tail of 6, "
            f"got K = {log_weights.shape[0]}"
        )
    log_weights = log_weights.detach()
    # NaN or +inf anywhere, or no finite ratio at all: no tail to fit (arviz returns inf or
    # a fit of the other draws for these, and the spread below would read NaN as constant)
    undefined = (
        log_weights.isnan().any(0) | log_weights.isposinf().any(0) | log_weights.isneginf().all(0)
    )
    # Ratios equal to within rounding (an exact posterior as proposal) have no tail to fit
    # (arviz 0.x returns inf or nan, arviz >= 1 raises): their k̂ is 0.
    spread = log_weights.max(0).values - log_weights.min(0).values
    size = log_weights.nan_to_num(0.0, 0.0, 0.0).abs().max(0).values
    rounding = ROUNDING_ULPS * torch.finfo(log_weights.dtype).eps * size
    fitted = (spread >= rounding.clamp(min=CONSTANT_SPREAD)) & ~undefined
    khat = torch.zeros(log_weights.shape[1], dtype=torch.float64)
    khat[undefined.cpu()] = math.nan
    if fitted.any():
        values = log_weights.T[fitted].double().cpu().numpy()
        khat[fitted.cpu()] = torch.as_tensor(_psis_khat(values), dtype=torch.float64)
    return khat.to(dtype=log_weights.dtype, device=log_weights.device)


def khat_summary(khat):
    r"""Mean and max of :math:`\hat k`, the fraction of datapoints at or above each of the
    thresholds 0.5 and 0.7, and the fraction whose :math:`\hat k` is NaN (no fit:
    non-finite log-ratios, :func:`pareto_khat`), as plain floats. A NaN :math:`\hat k`
    makes the mean and max NaN and counts as at or above every threshold: unreliable."""
    undefined = khat.isnan()
    return {
        "khat_mean": khat.mean().item(),
        "khat_max": khat.max().item() if not undefined.any() else math.nan,
        **{
            f"khat_frac_ge_{t}": ((khat >= t) | undefined).double().mean().item()
            for t in THRESHOLDS
        },
        "khat_frac_nan": undefined.double().mean().item(),
    }


def to_inference_data(model, guide, x, num_samples=100, num_chains=2, **kwargs):
    r"""Posterior draws of ``guide`` with the model's posterior predictive and PSIS diagnostics,
    as arviz's data structure.

    Groups: ``posterior`` (every latent site, dims ``(chain, draw, datapoint, <site>_dim_i)``),
    ``posterior_predictive`` (a draw of each observed site at each posterior draw),
    ``observed_data``, ``log_likelihood`` (:math:`\log p(x_n \mid z)` per observed site),
    ``sample_stats`` (``log_importance_ratio``, :math:`\log p(x, z) - \log q(z \mid x)`), and
    the posterior's attrs ``pareto_k`` (one :math:`\hat k` per datapoint, from all the draws)
    and ``pareto_k_thresholds``. The draws are independent; they are laid out as
    ``num_chains`` chains so that :math:`\hat R` is defined (and ≈ 1).

    A point-mass guide (a ``Delta`` at a latent site, e.g.
    :class:`~pyromem.infer.MAPRefinement`; the test of
    :func:`~pyromem.diagnostics.compare_guides`) has no density: it has no importance ratios
    and no :math:`\hat k`, so ``sample_stats`` and the attrs ``pareto_k`` and
    ``pareto_k_thresholds`` are left out, and the attr ``point_mass`` is 1 (0 otherwise).

    :param callable model: a Pyro model ``model(x, **kwargs)`` with its sites in the data plate.
    :param callable guide: a guide of it.
    :param torch.Tensor x: B datapoints.
    :param int num_samples: draws per chain.
    :param int num_chains: chains.
    :returns: ``arviz.InferenceData`` (arviz 0.x) or ``xarray.DataTree`` (arviz ≥ 1).
    :raises ValueError: if a count is below 1 or ``num_samples * num_chains`` below 30 (k̂).
    """
    for name, value in (("num_samples", num_samples), ("num_chains", num_chains)):
        as_int(value, name, 1)
    total = num_samples * num_chains
    if total < MIN_DRAWS:
        raise ValueError(f"num_samples * num_chains must be >= {MIN_DRAWS} for k̂, got {total}")
    args, batch = (x,), len(x)
    with torch.no_grad():
        nesting = max_plate_nesting(model, guide, args, kwargs)
        model_trace, guide_trace = particle_traces(
            model, guide, args, kwargs, total, nesting, validated=True
        )
        point = is_point_guide(model_trace, guide_trace)
        if not point:
            log_ratios = log_ratio(model_trace, guide_trace, nesting).expand(total, batch)
            khat = pareto_khat(log_ratios)

        def draws(value, event_shape=()):
            # (K, [1, ...,] B, *event) → (chains, draws, B, *event)
            shape = (total, batch) + tuple(event_shape)
            value = value.reshape(
                shape if value.numel() == math.prod(shape) else (total, batch, -1)
            )
            return value.reshape((num_chains, num_samples) + value.shape[1:]).double().cpu()

        def datapoints_first(site, value):
            # value broadcast to the site's shape, the data plate's dim moved right after the
            # particles': Pyro gives a plate nested in it the dim left of its own
            full = torch.broadcast_shapes(value.shape, site["fn"].shape())
            value = value.expand(full)
            batch_dims = value.dim() - len(site["fn"].event_shape)
            frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
            if frames:
                value = value.movedim(batch_dims + frames[0].dim, batch_dims - nesting)
            return value

        def site_draws(site, value):
            return draws(datapoints_first(site, value), site["fn"].event_shape)

        posterior, predictive, log_likelihood, observed = {}, {}, {}, {}
        for name in latent_sites(model_trace):
            site = model_trace.nodes[name]
            posterior[name] = site_draws(site, site["value"])
        for name in observed_sites(model_trace):
            site = model_trace.nodes[name]
            predictive[name] = site_draws(site, site["fn"].sample())
            log_likelihood[name] = draws(
                per_datapoint(site_log_prob(site), site, nesting).expand(-1, batch)
            )
            value = datapoints_first(site, site["value"])[0]  # one draw's: a view, no copy
            observed[name] = value.reshape(predictive[name].shape[2:]).double().cpu()
    dims = {"log_importance_ratio": ["datapoint"]}
    for group in (posterior, predictive):
        for name, value in group.items():
            dims[name] = ["datapoint"] + [f"{name}_dim_{i}" for i in range(value.dim() - 3)]
    groups = {
        "posterior": _numpy(posterior),
        "posterior_predictive": _numpy(predictive),
        "observed_data": _numpy(observed),
        "log_likelihood": _numpy(log_likelihood),
    }
    attrs = {"num_draws": total, "point_mass": int(point)}
    if not point:
        groups["sample_stats"] = {"log_importance_ratio": draws(log_ratios).numpy()}
        attrs["pareto_k"] = khat.double().cpu().tolist()
        attrs["pareto_k_thresholds"] = list(THRESHOLDS)
    return _from_dict(groups, dims, attrs)


def _numpy(group):
    return {name: value.numpy() for name, value in group.items()}


def _from_dict(groups, dims, attrs):
    if _arviz_major() < 1:
        import arviz

        data = arviz.from_dict(**groups, dims=dims)
    else:
        from arviz_base import from_dict

        data = from_dict(groups, dims=dims)
    data["posterior"].attrs.update(attrs)
    return data
