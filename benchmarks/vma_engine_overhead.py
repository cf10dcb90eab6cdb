"""Step time of VMA few-shot training through the engine against a hand-written loop.

Both train the same VMA (the demo's nets) on few-shot episodes of ``glyphs``
(C classes × S shots in memory, Q queries per class), with Adam and a cosine
learning-rate decay, under the same ELBO (``TraceEnum_ELBO``, the address
enumerated; ``--address vimco`` for VIMCO). The hand loop is the one the VMA
recipe used before it moved to the engine: draw an episode, step, schedule.
The engine run is :func:`pyromem.train.fit` on the recipe's own
:func:`~pyromem.experiments.vma.training_episodes` (``batch_size=None``: one
episode per step), with checkpoints and metrics after every epoch. Times are
medians over ``--repeats`` runs of ``--steps`` steps, taken alternately in one
process, and reported as a ratio.

    python benchmarks/vma_engine_overhead.py [--steps 200] [--repeats 3] [--device cuda]

prints one JSON object.
"""

import json
import statistics
import tempfile
import time

import arguments
import pyro
import torch

from pyromem.data import sample_few_shot
from pyromem.experiments.configs import VMAConfig
from pyromem.experiments.vma import (
    DEMO_NETS,
    build_model,
    objective,
    training_episodes,
    vma_data,
)
from pyromem.train import fit


def hand_loop(vma, elbo, train, config, device):
    loss_fn = elbo(vma.model, vma.guide)
    optimizer = torch.optim.Adam(vma.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    with pyro.validation_enabled(False):
        for _ in range(config.steps):
            episode = sample_few_shot(
                train, config.classes, config.shots, config.queries, generator=generator
            )
            memory, x = episode.memory.to(device), episode.query.to(device)
            loss = loss_fn(x, memory=memory) / len(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=arguments.positive_int, default=200)
    parser.add_argument("--repeats", type=arguments.positive_int, default=3)
    parser.add_argument("--address", default="enum", choices=["enum", "vimco"])
    arguments.add_device(parser)
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    config = VMAConfig.build(
        mode="fewshot",
        dataset="glyphs",
        address=args.address,
        steps=args.steps,
        steps_per_epoch=args.steps,
        progress=False,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        **DEMO_NETS,
    )
    train, _ = vma_data(config)

    def model():
        torch.manual_seed(0)
        return build_model(
            config.address,
            train.event_shape,
            latent_dim=config.latent_dim,
            embedding_dim=config.embedding_dim,
            hidden=config.hidden,
        ).to(device)

    def time_hand():
        vma = model()
        start = time.perf_counter()
        hand_loop(vma, objective(config.address), train, config, device)
        return (time.perf_counter() - start) / config.steps

    def time_engine():
        vma = model()
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            fit(
                vma,
                training_episodes(config, train),
                out_dir=out,
                elbo=objective(config.address),
                epochs=1,
                batch_size=None,
                lr=config.lr,
                lr_schedule="cosine",
                accelerator=config.accelerator,
                progress=False,
            )
            return (time.perf_counter() - start) / config.steps

    hand, engine = [], []
    for _ in range(args.repeats):
        hand.append(time_hand())
        engine.append(time_engine())
    hand_ms, engine_ms = 1e3 * statistics.median(hand), 1e3 * statistics.median(engine)
    print(
        json.dumps(
            {
                "benchmark": "vma_engine_overhead",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "workload": f"VMA few-shot on glyphs 16x16, {config.classes} classes x "
                f"{config.shots} shots, {config.queries} queries per class, address "
                f"{config.address}, {config.steps} steps, median of {args.repeats}",
                "hand_loop_ms_per_step": hand_ms,
                "engine_ms_per_step": engine_ms,
                "engine_over_hand_loop": engine_ms / hand_ms,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
