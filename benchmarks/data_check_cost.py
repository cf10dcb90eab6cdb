"""Cost of the engine's one-time training-data check against one epoch of training.

:func:`pyromem.train.data_checks.check_training_data` runs once before the first
step of :func:`pyromem.train.fit`: the first batch through the guide and model
with Pyro's validation on, then every datapoint checked finite and inside the
likelihood's support. The workload is MNIST-sized: ``--num-data`` binary images
of 1×28×28 (60,000 by default) and Pyro's example VAE (MLP 784-400-50). Both
figures are medians of ``--repeats`` runs in this process; the epoch is
estimated from ``--steps`` timed SVI steps of batch 128.

    python benchmarks/data_check_cost.py [--num-data 60000] [--device cuda]

prints one JSON object.
"""

import json
import statistics
import time

import arguments
import pyro
import torch

from pyromem.models import VAE
from pyromem.train.data_checks import check_training_data


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-data", type=arguments.positive_int, default=60000)
    parser.add_argument("--repeats", type=arguments.positive_int, default=3)
    parser.add_argument("--steps", type=arguments.positive_int, default=20)
    arguments.add_device(parser)
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    generator = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((args.num_data, 1, 28, 28), 0.3), generator=generator)
    vae = VAE((1, 28, 28), 50, hidden=(400,)).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    checks = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        check_training_data(vae, x, batch_size=128, drop_labels=False, num_data=len(x))
        sync()
        checks.append(time.perf_counter() - start)
    loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    batch = x[:128].to(device)
    steps = []
    with pyro.validation_enabled(False):
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer.zero_grad()
                loss_fn(batch, num_data=len(x)).backward()
                optimizer.step()
            sync()
            steps.append((time.perf_counter() - start) / args.steps)
    check_s, step_s = statistics.median(checks), statistics.median(steps)
    epoch_s = step_s * -(-args.num_data // 128)
    print(
        json.dumps(
            {
                "benchmark": "data_check_cost",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "workload": f"{args.num_data} binary images 1x28x28, VAE 784-400-50, batch 128",
                "check_seconds": check_s,
                "epoch_seconds_estimated": epoch_s,
                "check_over_epoch": check_s / epoch_s,
            }
        )
    )


if __name__ == "__main__":
    main()
