"""Train pyromem's VAE on the embedded digits with Pyro's own SVI loop.

The model is a plain Pyro program: swap ``--elbo`` between Trace_ELBO,
TraceMeanField_ELBO and JitTrace_ELBO without touching it. Prints one JSON
line with the test ELBO and IWAE-K bound per image.

    python examples/vae_svi.py --epochs 20 --elbo TraceMeanField_ELBO
"""

import argparse
import json

import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

from pyromem.data import load
from pyromem.diagnostics import elbo_decomposition, log_likelihood
from pyromem.models import VAE

ELBOS = {e.__name__: e for e in (Trace_ELBO, TraceMeanField_ELBO, JitTrace_ELBO)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--elbo", choices=sorted(ELBOS), default="Trace_ELBO")
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    pyro.set_rng_seed(0)
    train = load("digits", "train", binarize="dynamic", size=16)
    test = load("digits", "test", binarize="static", size=16).images.to(args.device)
    vae = VAE(train.event_shape, latent_dim=args.latent_dim, hidden=(256,)).to(args.device)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), ELBOS[args.elbo]())
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    pyro.enable_validation(False)
    for epoch in range(args.epochs):
        loss = sum(svi.step(x.to(args.device), num_data=len(train)) for x in loader)
        print(f"epoch {epoch + 1}: train ELBO {-loss / len(train) / len(loader):.2f} nats/image")
    pyro.enable_validation(True)

    terms = elbo_decomposition(vae.model, vae.guide, test, num_particles=10)
    iwae = log_likelihood(vae.model, vae.guide, test, num_samples=args.num_samples)
    summary = {"elbo": args.elbo, "epochs": args.epochs, **terms.summary(), **iwae.summary()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
