"""``pyromem train vae`` end to end against a hand-written script with the same outputs.

Data: ``--num-images`` MNIST-sized (28×28) binary images drawn from the embedded
digits (upsampled, as Bernoulli probabilities), stored as a ``.npz`` and split
by pyromem's loader into train and test (1/5). Both runs train pyromem's MLP VAE
784-400-50 for ``--epochs`` epochs (Adam 1e-3, batches of 128), score the
held-out ELBO (10 particles, 512 test images) after every epoch, and end with
the test ELBO and IWAE-K and three figures (ELBO curve, reconstructions,
samples). ``pyromem`` runs as the console command (``python -m pyromem``); the
hand-written script is this file with ``--hand``: a plain SVI loop with
``Trace_ELBO``, hand-written bounds, matplotlib figures. Both are timed as
subprocesses, interpreter start-up included; the ratio is the figure.

    python benchmarks/train_vae_end_to_end.py [--epochs 30] [--device cuda]

prints one JSON object.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import arguments
import numpy as np
import torch
import torch.nn.functional as F


def write_images(path, num_images):
    """``num_images`` 28×28 binary images drawn from the upsampled embedded digits."""
    from pyromem.data import load

    digits = load("digits", split="train").images
    generator = torch.Generator().manual_seed(0)
    pick = torch.randint(len(digits), (num_images,), generator=generator)
    probs = F.interpolate(digits[pick], size=(28, 28), mode="bilinear", align_corners=False)
    images = torch.bernoulli(probs.clamp(0, 1), generator=generator)
    np.savez(path, images=images.numpy().astype(np.float32))


def hand_script(args):
    """Train, score and draw as a researcher would by hand; returns its results dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyro
    from evaluation_overhead import hand_elbo, hand_iwae

    from pyromem.data import load
    from pyromem.models import VAE

    device = torch.device(args.device)
    pyro.set_rng_seed(0)
    pyro.enable_validation(False)
    train = load("npz", split="train", root=args.data).images.to(device)
    test = load("npz", split="test", root=args.data).images.to(device)
    vae = VAE((1, 28, 28), latent_dim=50, hidden=(400,)).to(device)
    loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)

    curve = []
    for _ in range(args.epochs):
        total = 0.0
        for index in torch.randperm(len(train), device=device).split(128):
            optimizer.zero_grad()
            loss = loss_fn(train[index], num_data=len(train)) / len(train)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        with torch.no_grad():
            curve.append((-total / len(train), hand_elbo(vae, test[:512], 10).mean().item()))
    with torch.no_grad():
        test_elbo = torch.cat([hand_elbo(vae, x, 10) for x in test.split(256)]).mean().item()
        test_iwae = (
            torch.cat([hand_iwae(vae, x, args.num_samples, 100) for x in test.split(256)])
            .mean()
            .item()
        )
        reconstructions = vae.reconstruct(test[:10]).cpu()
        samples = vae.generate(40).cpu()
    out = Path(args.out)
    figure, axis = plt.subplots()
    axis.plot(range(1, args.epochs + 1), curve, label=["train", "test"])
    axis.set(xlabel="epoch", ylabel="ELBO (nats)")
    axis.legend()
    figure.savefig(out / "elbo_curve.png")
    for name, images, rows in (
        ("reconstructions", torch.cat([test[:10].cpu(), reconstructions]), 2),
        ("samples", samples, 4),
    ):
        figure, axes = plt.subplots(rows, 10, figsize=(10, rows))
        for axis, image in zip(axes.flat, images, strict=True):
            axis.imshow(image[0], cmap="gray")
            axis.axis("off")
        figure.savefig(out / f"{name}.png")
    plt.close("all")
    return {"test_elbo_nats": test_elbo, "test_log_likelihood_nats": test_iwae}


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=arguments.positive_int, default=30)
    parser.add_argument(
        "--num-images", type=arguments.positive_int, default=5000, help="train and test"
    )
    parser.add_argument(
        "--num-samples", type=arguments.positive_int, default=1000, help="K of IWAE-K"
    )
    arguments.add_device(parser)
    parser.add_argument("--hand", action="store_true", help="run the hand-written script")
    parser.add_argument("--data", help="(with --hand) the .npz")
    parser.add_argument("--out", help="(with --hand) the folder of its figures")
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    if args.hand:
        print(json.dumps(hand_script(args)))
        return
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "images.npz", Path(folder) / "runs"
        write_images(data, args.num_images)
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        commands = {
            "pyromem": [
                *(sys.executable, "-m", "pyromem", "train", "vae", "--dataset", "npz"),
                *("--root", str(data), "--epochs", str(args.epochs), "--hidden", "400"),
                *("--latent-dim", "50", "--batch-size", "128", "--lr", "1e-3"),
                *("--num-samples", str(args.num_samples), "--accelerator", accelerator),
                *("--out", str(out / "pyromem"), "--no-progress", "--json"),
            ],
            "hand": [
                *(sys.executable, __file__, "--hand", "--data", str(data)),
                *("--epochs", str(args.epochs), "--num-samples", str(args.num_samples)),
                *("--device", args.device, "--out", str(out / "hand")),
            ],
        }
        (out / "hand").mkdir(parents=True)
        seconds, results = {}, {}
        for name, command in commands.items():
            start = time.perf_counter()
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds[name] = time.perf_counter() - start
            if run.returncode != 0:
                raise SystemExit(f"{name} failed:\n{run.stderr[-3000:]}")
            found = json.loads(run.stdout.strip().splitlines()[-1])
            results[name] = {k: found[k] for k in ("test_elbo_nats", "test_log_likelihood_nats")}
    print(
        json.dumps(
            {
                "benchmark": "train_vae_end_to_end",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "workload": f"MLP VAE 784-400-50, {args.num_images} images (4/5 train), "
                f"{args.epochs} epochs, held-out ELBO every epoch, IWAE-{args.num_samples}",
                "seconds": seconds,
                "results": results,
                "pyromem_over_hand": seconds["pyromem"] / seconds["hand"],
                "target": "at most 2",
            }
        )
    )


if __name__ == "__main__":
    main()
