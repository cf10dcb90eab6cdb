"""Overhead of training pyromem's VAE through Pyro against a hand-written PyTorch ELBO.

Both steps train the same nets (an MLP VAE 784-400-50, Bernoulli likelihood)
on the same batch of 128 binary images, with Adam, and compute the same
single-sample estimator: log p(x|z) + log p(z) − log q(z|x) at one
reparameterised draw. The pyromem step runs ``Trace_ELBO()(vae.model,
vae.guide)`` with Pyro's validation off, as the training engine does. Timings
are medians over repeated steps, taken alternately in one process, and
reported as a ratio.

    python benchmarks/svi_overhead.py [--steps 300] [--device cuda]

prints one JSON object.
"""

import copy
import json
import statistics
import time

import arguments
import pyro
import torch
from torch.distributions import Normal

from pyromem.models import VAE


def hand_written_loss(encoder, decoder, x, num_data):
    loc, scale = encoder(x)
    z = loc + scale * torch.randn_like(loc)
    logits = decoder(z)
    log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    log_joint = log_lik.flatten(1).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)
    elbo = log_joint - Normal(loc, scale).log_prob(z).sum(-1)
    return -elbo.sum() * (num_data / len(x))


def timed(step, steps, sync):
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=arguments.positive_int, default=300, help="timed steps of each loss"
    )
    parser.add_argument("--warmup", type=arguments.non_negative_int, default=20)
    parser.add_argument("--batch-size", type=arguments.positive_int, default=128)
    arguments.add_device(parser)
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    torch.manual_seed(0)
    num_data = 60_000

    vae = VAE((1, 28, 28), latent_dim=50, hidden=(400,)).to(device)
    encoder, decoder = copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder)
    x = torch.bernoulli(torch.full((args.batch_size, 1, 28, 28), 0.3, device=device))

    pyro.enable_validation(False)
    pyro_loss = pyro.infer.Trace_ELBO()(vae.model, vae.guide)
    pyro_optim = torch.optim.Adam(vae.parameters(), lr=1e-3)
    torch_optim = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=1e-3)

    def pyro_step():
        pyro_optim.zero_grad()
        pyro_loss(x, num_data=num_data).backward()
        pyro_optim.step()

    def torch_step():
        torch_optim.zero_grad()
        hand_written_loss(encoder, decoder, x, num_data).backward()
        torch_optim.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timed(pyro_step, args.warmup, sync)
    timed(torch_step, args.warmup, sync)
    # alternate short blocks so that drifts in machine load hit both alike
    pyro_times, torch_times = [], []
    block = 10
    for done in range(0, args.steps, block):
        pyro_times += timed(pyro_step, min(block, args.steps - done), sync)
        torch_times += timed(torch_step, min(block, args.steps - done), sync)
    pyro_median = statistics.median(pyro_times)
    torch_median = statistics.median(torch_times)
    print(
        json.dumps(
            {
                "benchmark": "svi_overhead",
                "model": "MLP VAE 784-400-50, Bernoulli",
                "batch_size": args.batch_size,
                "steps": len(pyro_times),
                "device": str(device),
                "device_name": arguments.device_name(device),
                "torch_threads": torch.get_num_threads(),
                "pyromem_trace_elbo_step_ms": 1e3 * pyro_median,
                "hand_written_step_ms": 1e3 * torch_median,
                "overhead_ms": 1e3 * (pyro_median - torch_median),
                "ratio": pyro_median / torch_median,
            }
        )
    )


if __name__ == "__main__":
    main()
