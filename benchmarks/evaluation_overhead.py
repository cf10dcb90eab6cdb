"""Cost of pyromem's test bounds against hand-written ones on the same VAE.

``pyromem.diagnostics.log_likelihood`` (IWAE-K through Pyro traces of the model
and guide, vectorised particles, chunked) is timed against a hand-written IWAE-K
that calls the VAE's encoder once and its decoder on each chunk of draws; and
``elbo_decomposition`` (per-site expected log-likelihood and analytic KL)
against a hand-written ELBO with the same parts. The model is pyromem's MLP VAE
784-400-50 (Bernoulli) at initialisation: the cost does not depend on training.
Both use chunks of ``--chunk`` draws over ``--batch`` MNIST-sized binary images;
``log_likelihood`` is also timed at its default passes, as many draws as keep a pass near
its budget of observed scalars (:func:`~pyromem.diagnostics.log_likelihood.draws_per_pass`),
against its passes of ``--chunk`` draws (``log_likelihood_default_passes_over_chunk``).
Times are medians of ``--repeats`` runs taken alternately in one process, the
order of each pair reversed at every repeat (the second of two runs is faster,
by 0.07-0.10 of the ELBO's ratio on this CPU); the ratios are the figures,
and the bounds' means are printed beside them (equal up to Monte Carlo noise).
The ratios are also given as medians of each repeat's ratio (``paired``),
steadier when other jobs load the machine.

    python benchmarks/evaluation_overhead.py [--num-samples 1000] [--threads 2] [--device cuda]

prints one JSON object.
"""

import json
import math
import statistics
import time

import arguments
import torch
from torch.distributions import Normal, kl_divergence

from pyromem.diagnostics import elbo_decomposition, log_likelihood
from pyromem.diagnostics.log_likelihood import draws_per_pass
from pyromem.models import VAE


def hand_iwae(vae, x, num_samples, chunk):
    """IWAE-K per image: the encoder once, the decoder per chunk of draws."""
    loc, scale = vae.encoder(x)
    guide, prior = Normal(loc, scale), Normal(torch.zeros_like(loc), 1.0)
    chunks = []
    for start in range(0, num_samples, chunk):
        z = guide.sample((min(chunk, num_samples - start),))
        log_p = vae.decode(z).log_prob(x) + prior.log_prob(z).sum(-1)
        chunks.append(log_p - guide.log_prob(z).sum(-1))
    return torch.logsumexp(torch.cat(chunks), 0) - math.log(num_samples)


def hand_elbo(vae, x, num_particles):
    """The ELBO per image with its KL in closed form."""
    loc, scale = vae.encoder(x)
    guide = Normal(loc, scale)
    z = guide.rsample((num_particles,))
    kl = kl_divergence(guide, Normal(torch.zeros_like(loc), 1.0)).sum(-1)
    return vae.decode(z).log_prob(x).mean(0) - kl


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch", type=arguments.positive_int, default=256, help="test images per pass"
    )
    parser.add_argument(
        "--num-samples", type=arguments.positive_int, default=1000, help="K of IWAE-K"
    )
    parser.add_argument(
        "--chunk", type=arguments.positive_int, default=100, help="draws per vectorised pass"
    )
    parser.add_argument(
        "--num-particles", type=arguments.positive_int, default=10, help="draws of the ELBO"
    )
    parser.add_argument("--repeats", type=arguments.positive_int, default=5)
    arguments.add_threads(parser)
    arguments.add_device(parser)
    args = parser.parse_args()
    arguments.set_threads(args.threads)
    device = arguments.device(parser, args.device)
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((args.batch, 1, 28, 28), 0.3)).to(device)
    vae = VAE((1, 28, 28), latent_dim=50, hidden=(400,)).to(device).eval()

    def timed(function):
        with torch.no_grad():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            value = function()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return time.perf_counter() - start, value.mean().item()

    runs = {
        "iwae_pyromem": lambda: (
            log_likelihood(
                vae.model, vae.guide, x, num_samples=args.num_samples, chunk_size=args.chunk
            ).log_likelihood
        ),
        "iwae_hand": lambda: hand_iwae(vae, x, args.num_samples, args.chunk),
        "iwae_pyromem_default_passes": lambda: (
            log_likelihood(vae.model, vae.guide, x, num_samples=args.num_samples).log_likelihood
        ),
        "elbo_pyromem": lambda: (
            elbo_decomposition(vae.model, vae.guide, x, num_particles=args.num_particles).elbo
        ),
        "elbo_hand": lambda: hand_elbo(vae, x, args.num_particles),
    }
    for run in runs.values():  # warm-up
        timed(run)
    seconds = {name: [] for name in runs}
    means = {}
    pairs = [
        ("iwae_pyromem", "iwae_hand", "iwae_pyromem_default_passes"),
        ("elbo_pyromem", "elbo_hand"),
    ]
    for repeat in range(args.repeats):
        for pair in pairs:
            # each pair's order alternates: the second of two runs is faster
            for name in pair[:: 1 - 2 * (repeat % 2)]:
                elapsed, means[name] = timed(runs[name])
                seconds[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in seconds.items()}

    def paired(name, hand):
        return statistics.median(a / b for a, b in zip(seconds[name], seconds[hand], strict=True))

    print(
        json.dumps(
            {
                "benchmark": "evaluation_overhead",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "num_samples": args.num_samples,
                "num_particles": args.num_particles,
                "seconds": median,
                "bound_means_nats": means,
                "log_likelihood_over_hand": median["iwae_pyromem"] / median["iwae_hand"],
                "elbo_decomposition_over_hand": median["elbo_pyromem"] / median["elbo_hand"],
                "default_draws_per_pass": draws_per_pass(x, x[0].numel()),
                "log_likelihood_default_passes_over_chunk": median["iwae_pyromem_default_passes"]
                / median["iwae_pyromem"],
                "paired": {
                    "log_likelihood_over_hand": paired("iwae_pyromem", "iwae_hand"),
                    "elbo_decomposition_over_hand": paired("elbo_pyromem", "elbo_hand"),
                    "log_likelihood_default_passes_over_chunk": paired(
                        "iwae_pyromem_default_passes", "iwae_pyromem"
                    ),
                },
                "target": "each ratio at most 1.2",
            }
        )
    )


if __name__ == "__main__":
    main()
