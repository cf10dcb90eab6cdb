"""What the Kanerva++ memory buys: conditional ELBO of K++ and controls after a short training.

Each variant trains ``--steps`` steps of Adam 3e-3 on episodes of T random
16×16 digits (``--episode-length``, 32 images per step, one CPU thread) and is
scored on 32 fixed test episodes (10 particles); the same seed builds every
variant. ``gain`` is the mean over seeds of the difference to the plain VAE of
the same nets (``write="none"``), ``gaps`` the differences seed by seed. Controls:

- ``zero_writer``: the writer is fed zeros, so the readout prior is learned but
  ignores the episode; a gain no larger than this one is not the memory's.
- ``fixed_keys``: every read is the centred block, without key noise.
- ``linear_writer``: App. E's deep linear conv-transpose writer (no ReLUs).
- ``dense``: the dense-write ablation of §4.2.

``--same-class`` draws the images of an episode from one digit class
(:func:`~pyromem.data.sample_class_episodes`), as the integration test
``tests/test_kanerva_digits.py`` does. Prints one JSON object (nats/image).
Measurements are in docs/models/kanerva.md.

    python benchmarks/kpp_memory_gain.py [--steps 300] [--episode-length 2] [--seeds 0 1 2]
        [--same-class] [--key-scale 3] [--variants kpp zero_writer ...] [--device cuda]
"""

import json
import statistics

import arguments
import pyro
import torch
from torch import nn

from pyromem.data import load, sample_class_episodes, sample_episodes
from pyromem.diagnostics import elbo_decomposition
from pyromem.models import KanervaPlusPlus

IMAGES_PER_STEP, SHAPE = 32, (1, 16, 16)
OPTIONS = dict(
    latent_dim=8, memory_shape=(1, 16, 16), block_shape=(8, 8), embed_dim=64, channels=(16, 32)
)


class ZeroWriter(KanervaPlusPlus):
    def _write(self, embedding):
        return self.writer(torch.zeros_like(embedding.mean(-2)))


class FixedKeys(KanervaPlusPlus):
    def readout_prior(self, memory, keys):
        return super().readout_prior(memory, torch.zeros_like(keys))


def linear_writer(**options):
    kpp = KanervaPlusPlus(SHAPE, **options)
    for module in kpp.writer.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Identity())
    return kpp


VARIANTS = {
    "plain_vae": lambda **options: KanervaPlusPlus(SHAPE, write="none", **options),
    "kpp": lambda **options: KanervaPlusPlus(SHAPE, **options),
    "zero_writer": lambda **options: ZeroWriter(SHAPE, **options),
    "fixed_keys": lambda **options: FixedKeys(SHAPE, **options),
    "linear_writer": linear_writer,
    "dense": lambda **options: KanervaPlusPlus(SHAPE, write="dense", **options),
}


def episodes(data, count, length, generator, same_class):
    if same_class:
        return sample_class_episodes(data, count, length, generator=generator)
    return sample_episodes(data, count, length, generator=generator)


def train_and_score(model, train, test, seed, steps, same_class):
    length = test.shape[1]
    pyro.set_rng_seed(seed)
    loss_fn = pyro.infer.Trace_ELBO()(model.model, model.guide)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        x = episodes(train, IMAGES_PER_STEP // length, length, generator, same_class)
        x = x.to(test.device)
        optimizer.zero_grad()
        (loss_fn(x) / IMAGES_PER_STEP).backward()
        optimizer.step()
    with torch.no_grad():
        parts = elbo_decomposition(model.model, model.guide, test, num_particles=10)
    kl = {name: value.mean().item() / length for name, value in parts.kl.items()}
    return parts.elbo.mean().item() / length, kl


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=arguments.positive_int, default=300)
    parser.add_argument("--episode-length", type=arguments.positive_int, default=2)
    parser.add_argument("--seeds", type=arguments.non_negative_int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--same-class", action="store_true")
    parser.add_argument(
        "--key-scale", type=float, default=None, help="spatial_read's key_scale (default: its own)"
    )
    arguments.add_device(parser)
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    options = dict(OPTIONS)
    if args.key_scale is not None:
        options["key_scale"] = args.key_scale
    torch.set_num_threads(1)
    train = load("digits", "train", size=16, binarize="static")
    test = load("digits", "test", size=16, binarize="static")
    test_episodes = episodes(
        test, 32, args.episode_length, torch.Generator().manual_seed(0), args.same_class
    ).to(device)
    results = {}
    with pyro.validation_enabled(False):
        for name in dict.fromkeys(["plain_vae"] + args.variants):
            runs = []
            for seed in args.seeds:
                torch.manual_seed(seed)
                model = VARIANTS[name](**options).to(device)
                elbo, kl = train_and_score(
                    model, train, test_episodes, seed, args.steps, args.same_class
                )
                runs.append({"seed": seed, "elbo_nats": elbo, "kl": kl})
            results[name] = {"runs": runs}
    plain = [run["elbo_nats"] for run in results["plain_vae"]["runs"]]
    for result in results.values():
        gaps = [run["elbo_nats"] - p for run, p in zip(result["runs"], plain, strict=True)]
        result["gain_over_plain_vae_nats"] = statistics.mean(gaps)
        result["gaps_nats"] = gaps
    print(
        json.dumps(
            {
                "benchmark": "kpp_memory_gain",
                "what": "conditional ELBO per test image after a short training, nats",
                "config": vars(args),
                "device": str(device),
                "device_name": arguments.device_name(device),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
