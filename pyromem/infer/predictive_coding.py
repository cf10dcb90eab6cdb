r"""VAE-PC-GMM: a predictive-coding network over the decoder's layers (Annabi et al. 2022,
§4.2, Alg. 1, App. C.1).

The decoder is read as a cascade of unit-variance Gaussians (eq. 3),
:math:`p(h_l \mid h_{l+1}) = \mathcal{N}(h_l; f^l(h_{l+1}), I)` with :math:`h_0 = x` and
:math:`h_L = z`, whose free energy at point estimates is

.. math::

    F = \sum_{l=0}^{L-1} \tfrac12 \|\varepsilon_l\|^2 - \log p(\hat z; M) + C,
    \qquad \varepsilon_l = \hat h_l - f^l(\hat h_{l+1}).                              \qquad (4)

The network holds a representation population :math:`\hat h_l` and an error population
:math:`\varepsilon_l` per layer, and descends :math:`F` with rate :math:`\alpha`:

.. math::

    \hat h_l &\leftarrow \hat h_l + \alpha\big(f^{l-1\prime}(\hat h_l)^\top \varepsilon_{l-1}
        - \varepsilon_l\big),                                                         \qquad (31)

    \hat z &\leftarrow \hat z + \alpha f^{L-1\prime}(\hat z)^\top \varepsilon_{L-1}
        + \alpha \nabla \log p(\hat z; M),                                            \qquad (32)

where :math:`\alpha \nabla \log p = \tfrac{\alpha}{\sigma^2}(\mathrm{softmax}(-\|\hat z -
M\|^2/2\sigma^2) M^\top - \hat z)` for the balanced isotropic memory. Every update is local: a
Jacobian-transpose product of one layer with the error just below it.

Under the *fixed-prediction assumption* (App. C.2) the predictions :math:`f^l(\hat h_{l+1})` of
a feed-forward pass from :math:`\hat z` are held while the errors settle to their equilibrium
:math:`\varepsilon_l = f^{l-1\prime}(\hat h_l)^\top \varepsilon_{l-1}` (eq. 34); then
:math:`\varepsilon_{L-1}` is the back-propagated gradient (eq. 40) and one update of
:math:`\hat z` with rate :math:`\alpha` equals one BP step (Alg. 2) with :math:`\gamma = 2`,
rate :math:`\lambda = \alpha / 2` and the squared error of eq. 10, i.e.
:class:`~pyromem.infer.MAPRefinement` with ``lr=alpha / 2, prior_weight=2`` on a Gaussian
likelihood of variance 1/2.
"""

import torch
from torch import nn

from pyromem.infer.refinement import Refinement, check_rate


class PredictiveCoding(Refinement):
    r"""The PC network of Alg. 1 over ``layers``, started from the amortised guide's
    :math:`\hat z` and the feed-forward predictions :math:`\hat h_l = f^l(\hat h_{l+1})`.

    Which decoders qualify: those whose likelihood is (or is read as) a unit-variance Gaussian
    with mean :math:`f^0 \circ \dots \circ f^{L-1}(z)`, eq. 3; ``layers`` are those maps. The
    prior term comes from the model's distribution at ``site`` (any prior with a
    differentiable ``log_prob``), the bottom-up terms from ``layers`` and ``x`` alone.

    :param model: the model, for its prior at ``site``.
    :param guide: its amortised guide.
    :param layers: :math:`f^{L-1}, \dots, f^0` in the order they apply to :math:`z` (the first
        takes :math:`z`, the last outputs the mean of ``x``, any shape with ``x.numel()``
        elements per datapoint): a list of modules or an ``nn.Sequential``.
    :param int num_steps: T.
    :param float rate: α of eq. 30-32.
    :param bool fixed_predictions: update with the equilibrium errors of App. C.2 (eq. 34)
        instead of the representation populations of Alg. 1.
    :param str site: the refined site.
    :raises ValueError: if a layer's output width is not the next one's input width, where the
        layers say them (``nn.Linear``, or an ``nn.Sequential`` starting and ending with one).
    """

    def __init__(
        self, model, guide, layers, num_steps=100, rate=0.1, fixed_predictions=False, site="z"
    ):
        super().__init__(model, guide, num_steps=num_steps, site=site)
        try:
            layers = list(layers)
        except TypeError:  # not iterable: an int, None, a single module
            raise TypeError(
                f"layers must be a non-empty list of modules, got {type(layers).__name__}"
            ) from None
        if not layers or not all(callable(f) for f in layers):
            raise TypeError(f"layers must be a non-empty list of modules, got {layers!r}")
        _check_widths(layers)
        self.layers = layers
        self.rate = check_rate(rate, "rate")
        if not isinstance(fixed_predictions, bool):
            # bool("False") is True: a string or a number would pick an update silently
            raise TypeError(f"fixed_predictions: expected a bool, got {fixed_predictions!r}")
        self.fixed_predictions = fixed_predictions

    def check_site(self, site, z):
        """:meth:`~pyromem.infer.Refinement.check_site`, and that the
        layers start from z: the first one's input width (where it says it) is z's, and the
        layers' parameters have z's dtype.

        :raises ValueError: on another width; :raises TypeError: on another dtype.
        """
        fn = super().check_site(site, z)
        width = _in_width(self.layers[0])
        if width is not None and width != z.shape[-1]:
            raise ValueError(
                f"layers[0] takes width {width} but the site {self.site!r} has width "
                f"{z.shape[-1]}: layers must start from z"
            )
        parameters = (p for f in self.layers if isinstance(f, nn.Module) for p in f.parameters())
        parameter = next(parameters, None)
        if parameter is not None and parameter.dtype != z.dtype:
            raise TypeError(
                f"layers: their parameters are {parameter.dtype} but the guide's {self.site!r} "
                f"is {z.dtype}; convert the layers with .to({z.dtype})"
            )
        return fn

    def feedforward(self, z):
        r"""The network's state after a feed-forward pass: :math:`[\hat z, \hat h_{L-1},
        \dots, \hat h_1]`, with every error above the bottom one zero."""
        state = [z]
        for f in self.layers[:-1]:
            state.append(f(state[-1]))
        return state

    def update(self, state, x, prior):
        r"""One step of Alg. 1 (eq. 31-32) on ``state`` :math:`= [\hat z, \hat h_{L-1}, \dots,
        \hat h_1]`; returns the new state."""
        with torch.enable_grad():
            state = [h.detach().requires_grad_() for h in state]
            predictions = [f(h) for f, h in zip(self.layers, state, strict=True)]
            targets = state[1:] + [_like(x, predictions[-1])]
            errors = [(t - p).detach() for t, p in zip(targets, predictions, strict=True)]
            # One backward pass gives each layer's local product f'(h)^T eps and the prior's pull.
            bottom_up = torch.autograd.grad(
                predictions + [prior.log_prob(state[0]).sum()], state, errors + [None]
            )
        top_down = [torch.zeros_like(state[0])] + errors[:-1]
        return [
            (h + self.rate * (b - e)).detach()
            for h, b, e in zip(state, bottom_up, top_down, strict=True)
        ]

    def step(self, z, x, *args, **kwargs):
        r"""One update of :math:`\hat z` by a network started from the feed-forward state at z.

        With ``fixed_predictions`` this is the whole update of App. C.2: the errors at
        equilibrium (eq. 34) in one downward sweep, then eq. 32. Without it, only the bottom
        error is non-zero in that state, so for L > 1 only the prior moves :math:`\hat z`;
        :meth:`refine` carries the representation populations across steps instead.
        """
        prior = self.prior(x, *args, **kwargs)
        if not self.fixed_predictions:
            return self.update(self.feedforward(z), x, prior)[0]
        with torch.enable_grad():
            state = [h.detach().requires_grad_() for h in self.feedforward(z)]
            predictions = [f(h) for f, h in zip(self.layers, state, strict=True)]
            error = _like(x, predictions[-1]) - predictions[-1].detach()
            for h, p in zip(state[:0:-1], predictions[:0:-1], strict=True):
                (error,) = torch.autograd.grad(p, h, error)  # eq. 34
            (bottom_up,) = torch.autograd.grad(predictions[0], state[0], error)
            (pull,) = torch.autograd.grad(prior.log_prob(state[0]).sum(), state[0])
        return (z + self.rate * (bottom_up + pull)).detach()

    def refine(self, x, *args, trajectory=False, **kwargs):
        if self.fixed_predictions:
            return super().refine(x, *args, trajectory=trajectory, **kwargs)
        with torch.no_grad():
            prior = self.prior(x, *args, **kwargs)
            state = self.feedforward(self.initial(x, *args, **kwargs))
            path = [state[0]]
            for _ in range(self.num_steps):
                state = self.update(state, x, prior)
                path.append(state[0])
        return (state[0], path) if trajectory else state[0]


def _in_width(f):
    """The input width of ``f``: a Linear's, or the first module's of a Sequential; or None."""
    if isinstance(f, nn.Linear):
        return f.in_features
    if isinstance(f, nn.Sequential) and len(f):
        return _in_width(f[0])
    return None


def _elementwise(module):
    """Whether ``module`` keeps its input's width: an activation without parameters, an
    Identity or a Dropout."""
    return isinstance(module, (nn.Identity, nn.Dropout)) or (
        type(module).__module__ == nn.ReLU.__module__ and next(module.parameters(), None) is None
    )


def _out_width(f):
    """The output width of ``f``: a Linear's, or a Sequential's last module's, elementwise
    modules after it aside; or None."""
    if isinstance(f, nn.Linear):
        return f.out_features
    if isinstance(f, nn.Sequential):
        for module in reversed(f):
            if not _elementwise(module):
                return _out_width(module)
    return None


def _check_widths(layers):
    """Raise where a layer's output width is not the next layer's input width (elementwise
    layers between them keep the width)."""
    out, source = None, None
    for i, f in enumerate(layers):
        into = _in_width(f)
        if out is not None and into is not None and out != into:
            raise ValueError(
                f"layers[{source}] outputs width {out} but layers[{i}] takes width {into}: "
                "layers must chain, z through f^{L-1} first"
            )
        if not _elementwise(f):
            out, source = _out_width(f), i


def _like(x, prediction):
    """``x`` reshaped to the bottom layer's output, one datapoint per row."""
    if x.numel() != prediction.numel():
        raise ValueError(
            f"layers must output x's {x[0].numel()} values per datapoint, "
            f"got an output of shape {tuple(prediction.shape)} for x of shape {tuple(x.shape)}"
        )
    return x.reshape(prediction.shape)
