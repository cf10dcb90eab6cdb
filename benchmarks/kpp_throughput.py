"""Training throughput (images/s) of Kanerva++ and of the plain VAE with the same nets.

Both train on the same episodes of T digits images with Trace_ELBO and Adam; the
plain VAE is ``KanervaPlusPlus(write="none")``, K++'s encoder, q(z | X) head and
decoder without memory or keys, so the ratio is the cost of the memory. Timings
are medians of repeated runs in one process, K++ and the VAE taken alternately, on
``--device``. Prints one JSON object.

    python benchmarks/kpp_throughput.py [--steps 20] [--repeats 5] [--threads 1] [--device cuda]
"""

import json
import statistics
import time

import arguments
import pyro
import torch

from pyromem.data import load, sample_episodes
from pyromem.models import KanervaPlusPlus


def trainer(model, x):
    """One timed unit: ``steps`` SVI steps on the episodes ``x``."""
    loss_fn = pyro.infer.Trace_ELBO()(model.model, model.guide)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run(steps):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad()
            loss_fn(x).backward()
            optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        return steps * x.shape[0] * x.shape[1] / (time.perf_counter() - start)

    run(1)  # warm-up
    return run


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=arguments.positive_int, default=20)
    parser.add_argument("--repeats", type=arguments.positive_int, default=5)
    parser.add_argument("--episodes", type=arguments.positive_int, default=16)
    parser.add_argument("--length", type=arguments.positive_int, default=8)
    parser.add_argument("--size", type=arguments.positive_int, default=16)
    arguments.add_threads(parser)
    arguments.add_device(parser)
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    arguments.set_threads(args.threads)
    pyro.enable_validation(False)
    images = load("digits", "train", size=args.size, binarize="static").images
    x = sample_episodes(
        images, args.episodes, args.length, generator=torch.Generator().manual_seed(0)
    )
    shape = (1, args.size, args.size)
    pyro.set_rng_seed(0)
    options = dict(
        latent_dim=16,
        memory_shape=(3, args.size, args.size),
        block_shape=(args.size // 2, args.size // 2),
    )
    runs = {
        name: trainer(KanervaPlusPlus(shape, write=write, **options).to(device), x.to(device))
        for name, write in (("kpp", "block"), ("vae", "none"))
    }
    # interleaved repeats, so both see the same load on a shared machine
    rates = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            rates[name].append(run(args.steps))
    kpp_rate, vae_rate = (statistics.median(rates[name]) for name in ("kpp", "vae"))
    print(
        json.dumps(
            {
                "benchmark": "kpp_throughput",
                "what": "training images/s, Trace_ELBO + Adam, median of repeats",
                "config": vars(args),
                "device": str(device),
                "device_name": arguments.device_name(device),
                "torch_threads": torch.get_num_threads(),
                "kpp_images_per_s": kpp_rate,
                "vae_images_per_s": vae_rate,
                "kpp_over_vae": kpp_rate / vae_rate,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
