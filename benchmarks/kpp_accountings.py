"""Kanerva++ scored two ways on test episodes of several lengths T: our per-image bound
and the accounting of the authors' Dynamic Kanerva Machine code (not a bound).

One trained K++ (a checkpoint of ``pyromem train kpp``, or, without ``--checkpoint``,
the full demo's K++: 16×16 digits, same-class episodes of T = 4, its epochs) is
evaluated on the test split cut into fixed same-class episodes of each T. Each row:
the conditional ELBO per image (eq. 4, ours), the DKM code's figure
(:func:`pyromem.experiments.kpp.dkm_accounting_nats`: the KLs divided by T twice),
the per-image IWAE-K bound on log p(x_t | M), the reconstruction term and the KLs,
all in nats per image. Prints one JSON object.

    python benchmarks/kpp_accountings.py [--checkpoint PATH] [--lengths 2 4 8 16 32]
"""

import json
import tempfile
import time

import arguments
import torch

from pyromem.data import load
from pyromem.experiments import kpp as recipe


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a K++ checkpoint (default: train the demo's)")
    parser.add_argument(
        "--epochs",
        type=arguments.positive_int,
        default=recipe.DEMO_SETTINGS["full"]["epochs"],
        help="epochs of K++",
    )
    parser.add_argument(
        "--size", type=arguments.positive_int, default=16, help="image side of the trained K++"
    )
    parser.add_argument(
        "--lengths", type=arguments.positive_int, nargs="+", default=[2, 4, 8, 16, 32]
    )
    parser.add_argument("--num-particles", type=arguments.positive_int, default=10)
    parser.add_argument(
        "--num-samples", type=arguments.non_negative_int, default=100, help="K of IWAE-K (0: none)"
    )
    parser.add_argument(
        "--max-episodes", type=arguments.positive_int, help="test episodes per T (default: all)"
    )
    arguments.add_device(parser)
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    if args.checkpoint is None and device.index not in (None, 0):
        # the engine trains on its first devices; CUDA_VISIBLE_DEVICES picks which they are
        parser.error(
            f"argument --device: the K++ trained here takes the device's kind, not an index "
            f"({args.device!r}); give {device.type} with CUDA_VISIBLE_DEVICES, or --checkpoint"
        )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint
        if checkpoint is None:
            options = dict(recipe.DEMO_NETS, size=args.size, accelerator=device.type)
            if device.type != "cpu":
                options.pop("num_threads")
            trained = recipe.train_kpp(
                out_dir=folder,
                dataset="digits",
                episode_length=4,
                same_class=True,
                epochs=args.epochs,
                num_samples=1,
                progress=False,
                **options,
            )
            checkpoint = trained["checkpoint"]
        kpp, saved = recipe.load_kpp(checkpoint)
    data = saved.config["data"]
    test = load(
        data["dataset"],
        "test",
        binarize="static" if data.get("binarize") else None,
        size=data.get("size"),
        seed=data.get("seed", 0),
        root=data.get("root"),
    )
    labels = test.labels if data.get("same_class") else None
    with torch.no_grad():
        rows = recipe.compare_accountings(
            kpp,
            test.images,
            labels,
            args.lengths,
            args.num_particles,
            args.num_samples,
            seed=data.get("seed", 0),
            device=device,
            max_episodes=args.max_episodes,
        )
    print(
        json.dumps(
            {
                "benchmark": "kpp_accountings",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "checkpoint": args.checkpoint or f"demo K++, {args.epochs} epochs",
                "trained_episode_length": saved.config["episode_length"],
                "same_class": bool(data.get("same_class")),
                "units": "nats per test image",
                "bound": "elbo_nats: conditional ELBO of eq. 4; iwae_nats: IWAE-K on "
                "log p(x_t | M); dkm_accounting_nats: the DKM code's figure, not a bound",
                "num_particles": args.num_particles,
                "num_samples": args.num_samples,
                "rows": rows,
                "seconds": time.perf_counter() - start,
            }
        )
    )


if __name__ == "__main__":
    main()
