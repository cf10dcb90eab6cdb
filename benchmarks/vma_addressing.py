"""Training-step time of memory addressing against the memory size |M|, in one run.

Every address estimator reading a memory of |M| images for a batch of B images:

- ``enum``: VMA with the address enumerated in the guide (TraceEnum_ELBO): |M| decoder passes;
- ``vimco``, ``rws``: the address sampled, K particles (VIMCO, reweighted wake-sleep): K passes;
- ``nvil``: one sampled address, the score function with a learned baseline (TraceGraph_ELBO);
- ``gumbel``: one relaxed address, the read a mixture of the |M| slots (TraceMeanField_ELBO);
- ``soft_attention``: §4.2's baseline, a differentiable read Σ_a w_a(z) m_a: one decoder pass,
  but every slot enters every read.

Prints one JSON object: per method and |M| the median seconds of a full step (forward,
backward, Adam) over ``--repeats`` steps after a warm-up, ratios to VIMCO measured in the
same run, each method's step at the largest |M| over its step at the smallest, and where
VIMCO becomes faster than each other method. Bornschein et al. saw hard attention win over
soft attention from |M| >= 48.

Where VIMCO's time goes at the largest |M|: the forward and backward of the key net h on
every slot alone (``vimco_key_net_seconds``, the part no estimator avoids: the gradient of
q(a | x) reaches h through every slot's logit), the ratio that this part alone sets
(``vimco_floor_largest_over_smallest``: the smallest step plus h's time, over the smallest
step), and with ``--profile N`` the N operators of the step that take the most time
(torch.profiler, milliseconds per step).

    python benchmarks/vma_addressing.py --threads 1           # |M| in 16 .. 4096
    python benchmarks/vma_addressing.py --threads 1 --methods vimco --profile 12
    python benchmarks/vma_addressing.py --sizes 16 64 --repeats 3 --device cuda
"""

import json
import statistics
import time

import arguments
import pyro
import torch
from torch.profiler import ProfilerActivity, profile

from pyromem.diagnostics.compare_estimators import step_ms
from pyromem.experiments.vma import objective
from pyromem.models import VMA
from pyromem.models.vma import ADDRESSING, SoftAttentionVAE

METHODS = ADDRESSING + ("soft_attention",)


def step_time(model, elbo, x, memory, repeats):
    """Median seconds of one training step of ``elbo`` on ``model``."""
    return step_ms(model, elbo(model.model, model.guide), x, memory, repeats) / 1000


def key_net_time(model, memory, repeats):
    """Median seconds of the forward and backward of the key net h on every slot."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model.addressing.key_net(memory).sum().backward()
        if memory.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    model.zero_grad()
    return statistics.median(times[1:])


def operator_profile(model, elbo, x, memory, top, steps=5):
    """The ``top`` operators of a training step by their own time, milliseconds per step."""
    loss_fn = elbo(model.model, model.guide)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss_fn(x, memory=memory).backward()
        optimizer.step()

    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            step()
    rows = prof.key_averages(group_by_input_shape=True)
    rows = sorted(rows, key=lambda row: -row.self_cpu_time_total)[:top]
    return [
        {
            "operator": row.key,
            "input_shapes": str(row.input_shapes),
            "calls_per_step": row.count / steps,
            "self_cpu_ms_per_step": row.self_cpu_time_total / 1000 / steps,
        }
        for row in rows
    ]


def main():
    parser = arguments.Parser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=arguments.positive_int, nargs="+", default=[16, 64, 256, 1024, 4096]
    )
    parser.add_argument("--batch", type=arguments.positive_int, default=32)
    parser.add_argument("--image", type=arguments.positive_int, default=16, help="image side")
    parser.add_argument("--particles", type=arguments.positive_int, default=4)
    parser.add_argument("--repeats", type=arguments.positive_int, default=5)
    arguments.add_device(parser)
    arguments.add_threads(parser)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--profile",
        type=arguments.non_negative_int,
        default=0,
        help="list this many of VIMCO's top operators",
    )
    args = parser.parse_args()
    if "vimco" not in args.methods:
        parser.error("--methods: the ratios are to vimco, which must be among them")
    methods = [m for m in METHODS if m in args.methods]
    device = arguments.device(parser, args.device)
    arguments.set_threads(args.threads)
    shape = (1, args.image, args.image)
    nets = {"latent_dim": 16, "embedding_dim": 64, "hidden": (128,)}
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((args.batch,) + shape, 0.5)).to(device)
    seconds = {method: {} for method in methods}
    top = None
    with pyro.validation_enabled(False):
        for size in args.sizes:
            memory = torch.rand((size,) + shape, device=device)
            for address in (m for m in methods if m in ADDRESSING):
                model = VMA(shape, address=address, **nets).to(device)
                elbo = objective(address, args.particles)
                seconds[address][size] = step_time(model, elbo, x, memory, args.repeats)
                if address == "vimco" and size == max(args.sizes):
                    key_net = key_net_time(model, memory, args.repeats)
                    if args.profile:
                        top = operator_profile(model, elbo, x, memory, args.profile)
            if "soft_attention" in methods:
                model = SoftAttentionVAE(shape, **nets).to(device)
                elbo = pyro.infer.Trace_ELBO()
                seconds["soft_attention"][size] = step_time(model, elbo, x, memory, args.repeats)

    def crossover(other):
        # the smallest |M| from which VIMCO is faster at every larger size measured
        sizes = sorted(args.sizes)
        for i, size in enumerate(sizes):
            if all(seconds["vimco"][m] < seconds[other][m] for m in sizes[i:]):
                return size
        return None

    print(
        json.dumps(
            {
                "benchmark": "vma_addressing",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "torch_threads": torch.get_num_threads(),
                "batch": args.batch,
                "image_shape": list(shape),
                "vimco_particles": args.particles,
                "repeats": args.repeats,
                "statistic": "median seconds per training step (forward, backward, Adam)",
                "seconds": seconds,
                "ratio_to_vimco": {
                    method: {m: seconds[method][m] / seconds["vimco"][m] for m in args.sizes}
                    for method in methods
                    if method != "vimco"
                },
                "largest_over_smallest": {
                    method: seconds[method][max(args.sizes)] / seconds[method][min(args.sizes)]
                    for method in methods
                },
                "vimco_faster_from": {
                    method: crossover(method) for method in methods if method != "vimco"
                },
                "vimco_key_net_seconds": key_net,
                "vimco_floor_largest_over_smallest": 1
                + key_net / seconds["vimco"][min(args.sizes)],
                "vimco_profile_at_largest": top,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
