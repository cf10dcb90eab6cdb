"""Overhead of the training engine, :func:`pyromem.train.fit`, against a hand loop.

Both train the same model and guide (pyromem's MLP VAE 784-400-50, Bernoulli)
with the same ``Trace_ELBO`` loss, Adam at 1e-3, batches of ``--batch-size``
drawn in a fresh random order every epoch, over ``--num-data`` MNIST-sized
binary images for ``--epochs`` epochs, with Pyro's validation off. The hand
loop is the plain PyTorch loop of Pyro's examples; the engine adds Lightning,
the divergence guard, per-epoch metrics and an atomic checkpoint after every
epoch, and no evaluation (``eval_data=None``). The engine also runs with
``JitTrace_ELBO`` (``pyromem train vae --jit``), whose speed-up is reported.
Times are the whole runs' wall times divided by their steps, medians of
``--repeats`` runs taken alternately in one process; the ratio is the figure.

    python benchmarks/engine_overhead.py [--epochs 10] [--repeats 3] [--device cuda]

prints one JSON object.
"""

import argparse
import json
import platform
import statistics
import tempfile
import time

import pyro
import torch

from pyromem.models import VAE
from pyromem.train import fit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-data", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    data = torch.bernoulli(torch.full((args.num_data, 1, 28, 28), 0.3), generator=generator)
    steps = args.epochs * -(-args.num_data // args.batch_size)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def model():
        torch.manual_seed(0)
        return VAE((1, 28, 28), latent_dim=50, hidden=(400,)).to(device)

    def hand_loop():
        vae = model()
        x_all = data.to(device)
        loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)
        optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
        start = time.perf_counter()
        with pyro.validation_enabled(False):
            for _ in range(args.epochs):
                for index in torch.randperm(len(x_all)).split(args.batch_size):
                    optimizer.zero_grad()
                    loss = loss_fn(x_all[index], num_data=len(x_all)) / len(x_all)
                    loss.backward()
                    optimizer.step()
        sync()
        return (time.perf_counter() - start) / steps

    def engine(elbo=None):
        vae = model()
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
            )
            sync()
            return (time.perf_counter() - start) / steps

    hand, fitted, jitted = [], [], []
    for _ in range(args.repeats):
        hand.append(hand_loop())
        fitted.append(engine())
        jitted.append(engine(pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True)))
    hand_ms, engine_ms = 1e3 * statistics.median(hand), 1e3 * statistics.median(fitted)
    jit_ms = 1e3 * statistics.median(jitted)
    print(
        json.dumps(
            {
                "benchmark": "engine_overhead",
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or platform.machine(),
                "workload": f"MLP VAE 784-400-50, {args.num_data} images, batch "
                f"{args.batch_size}, {args.epochs} epochs, no eval data, median of {args.repeats}",
                "hand_loop_ms_per_step": hand_ms,
                "engine_ms_per_step": engine_ms,
                "engine_over_hand_loop": engine_ms / hand_ms,
                "engine_jit_ms_per_step": jit_ms,
                "jit_speedup": engine_ms / jit_ms,
                "target": 1.10,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
