"""A new memory model as a Pyro program: a VAE whose prior is a mixture over a learned memory
read with one Hopfield step; trained with pyromem.train.fit and compared across three guides.

    python examples/new_memory_model.py --epochs 20 --num-test 100 --num-samples 500

Prints the comparison table on stderr and one JSON object (its summary) on stdout. The model
is docs/tutorial-new-memory-model.md's.
"""

import argparse
import json
import sys
import tempfile

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyromem.data import load
from pyromem.diagnostics import compare_guides
from pyromem.diagnostics.psis import MIN_DRAWS
from pyromem.infer import GaussianRefinement, IterativeAmortizedGuide
from pyromem.memory import GaussianMixtureMemory
from pyromem.models.plates import data_plate
from pyromem.nets import MLPDecoder, MLPEncoder, make_likelihood
from pyromem.train import fit


class HopfieldPriorVAE(nn.Module):
    """z ~ Σ_k w_k N(z; m̃_k, σ² I) with m̃ = softmax(β M Mᵀ) M, x | z ~ Bernoulli(f_θ(z))."""

    def __init__(self, input_shape, latent_dim=4, slots=16, beta=2.0, scale=0.5, hidden=(64,)):
        super().__init__()
        self.memory = nn.Parameter(torch.randn(slots, latent_dim))  # M, learned
        self.beta, self.scale = beta, scale
        self.likelihood = make_likelihood("bernoulli", input_shape)
        self.encoder = MLPEncoder(input_shape, latent_dim, hidden)
        self.decoder = MLPDecoder(latent_dim, self.likelihood.param_shape, hidden)

    def prior(self):
        # one Hopfield step reads the memory against itself: each slot moves towards the slots
        # it resembles, and the cleaned slots are the mixture's means (Hopfield weights
        # w_k ∝ exp(‖m̃_k‖² / 2σ²): the distribution's default β = 1/σ², not the read's β)
        read = torch.softmax(self.beta * self.memory @ self.memory.T, -1) @ self.memory
        return GaussianMixtureMemory(read, scale=self.scale, weights="hopfield")

    def model(self, x, num_data=None):
        with data_plate(x, num_data):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x, num_data=None):
        with data_plate(x, num_data):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num-train", type=int, default=None, help="train images (all)")
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=500, help="K of IWAE-K and PSIS")
    parser.add_argument("--steps", type=int, default=20, help="T of the Gaussian refinement")
    parser.add_argument("--iterative-steps", type=int, default=200, help="its training steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_samples < MIN_DRAWS:  # before training, not after it
        parser.error(f"--num-samples: the PSIS fit needs at least {MIN_DRAWS} draws")
    pyro.set_rng_seed(args.seed)
    train = load("digits", "train", binarize="static").images[: args.num_train]
    test = load("digits", "test", binarize="static").images[: args.num_test]

    net = HopfieldPriorVAE(train.shape[1:])
    with tempfile.TemporaryDirectory() as out_dir:
        fit(net, train, out_dir=out_dir, epochs=args.epochs, batch_size=64, lr=3e-3,
            accelerator="cpu", progress=False)  # fmt: skip
    net.requires_grad_(False)

    iterative = IterativeAmortizedGuide(net.model, net.guide, num_steps=5)
    optimizer = torch.optim.Adam(iterative.parameters(), lr=3e-3)
    loss_fn = pyro.infer.Trace_ELBO()(net.model, iterative)
    for step in range(args.iterative_steps):
        optimizer.zero_grad()
        loss_fn(train[torch.arange(64) + 64 * step % (len(train) - 64)]).backward()
        optimizer.step()

    guides = {
        "amortized": net.guide,
        f"gaussian-{args.steps}": GaussianRefinement(net.model, net.guide, num_steps=args.steps),
        "iterative-5": iterative,
    }
    comparison = compare_guides(net.model, guides, test, num_samples=args.num_samples)
    print(comparison.table(), file=sys.stderr)
    print(json.dumps(comparison.summary()))


if __name__ == "__main__":
    main()
