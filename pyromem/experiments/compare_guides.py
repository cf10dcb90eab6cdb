"""Recipe: one model, four guides (Marino 2019; Cremer et al. 2018; Kim et al. 2018).

Trains a VAE on the train split with the engine (and, for ``memory-vae``, stores the codes of
``memory_size`` train images as the Gaussian-mixture memory prior of Annabi et al.), then
compares on test images:

- ``amortized``: the encoder, q_φ(z | x), the reference of the amortisation gap;
- ``gaussian-T``: :class:`~pyromem.infer.GaussianRefinement`, T steps on each image's ELBO;
- ``iterative-T``: :class:`~pyromem.infer.IterativeAmortizedGuide`, its update trained for
  ``iterative_steps`` gradient steps on the train split with the model held fixed;
- ``map-T``: :class:`~pyromem.infer.MAPRefinement`, a point mass (its row is the log joint).

Writes ``results.json``, ``table.md`` and ``compare_guides.png`` to ``out_dir``.
"""

import time
from pathlib import Path

import pyro
import torch

from pyromem.data import load
from pyromem.diagnostics import compare_guides
from pyromem.experiments.vae import write_results
from pyromem.infer import GaussianRefinement, IterativeAmortizedGuide, MAPRefinement
from pyromem.models import VAE, MemoryVAE
from pyromem.train import fit

MODELS = ("vae", "memory-vae")


def run_compare_guides(
    out_dir,
    *,
    model="vae",
    dataset="digits",
    epochs=30,
    latent_dim=8,
    hidden=(128,),
    memory_size=50,
    num_test=100,
    num_samples=500,
    num_particles=10,
    steps=20,
    lr=0.05,
    iterative_steps=200,
    seed=0,
    progress=False,
):
    """Train the model, compare its guides, write the table and figure; returns the results."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    pyro.set_rng_seed(seed)
    train = load(dataset, "train", binarize="static", seed=seed)
    test_x = load(dataset, "test", binarize="static", seed=seed).images[:num_test]
    vae = VAE(train.event_shape, latent_dim, "bernoulli", "mlp", hidden)
    fitted = fit(
        vae,
        train,
        epochs=epochs,
        batch_size=64,
        lr=3e-3,
        out_dir=out_dir / "train",
        seed=seed,
        accelerator="cpu",
        progress=progress,
    )
    vae = fitted.model.cpu().eval()
    net = vae
    if model == "memory-vae":
        net = MemoryVAE(vae, scale=1.0)
        net.write(train.images[:memory_size])
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    iterative = IterativeAmortizedGuide(net.model, net.guide, num_steps=5)
    optimizer = torch.optim.Adam(iterative.parameters(), lr=3e-3)
    loss_fn = pyro.infer.Trace_ELBO()(net.model, iterative)
    images = train.images
    generator = torch.Generator().manual_seed(seed)
    for _ in range(iterative_steps):
        batch = images[torch.randint(len(images), (64,), generator=generator)]
        optimizer.zero_grad()
        loss_fn(batch).backward()
        optimizer.step()
    guides = {
        "amortized": net.guide,
        f"gaussian-{steps}": GaussianRefinement(net.model, net.guide, num_steps=steps, lr=lr),
        f"iterative-{iterative.num_steps}": iterative,
        f"map-{steps}": MAPRefinement(net.model, net.guide, num_steps=steps, lr=lr),
    }
    comparison = compare_guides(
        net.model,
        guides,
        test_x,
        num_samples=num_samples,
        num_particles=num_particles,
        amortized="amortized",
    )
    table = comparison.table()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(table + "\n")
    figure = comparison.plot(out_dir / "compare_guides.png")
    results = {
        "model": model,
        "dataset": dataset,
        "split": "test",
        "binarization": "static",
        "epochs": fitted.epochs,
        "latent_dim": latent_dim,
        **comparison.summary(),
        "table": table,
        "figures": {"compare_guides": str(figure)},
        "seconds": time.perf_counter() - start,
    }
    write_results(results, out_dir)
    return results
