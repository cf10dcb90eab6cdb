"""Throughput of associative retrieval: T fixed-point steps of the Gaussian-mixture memory.

Workload (Annabi et al. eq. 11 / 45, the MCHN update eq. 28 for equal norms):
``--steps`` T full steps ``z ← Σ_k softmax_k(−‖z − M_k‖² / 2σ²) M_k`` for
``--batch`` B queries of width ``--dim`` d against N stored patterns, for each N
in ``--sizes``. Three forms, in the same run:

- ``library``: :meth:`pyromem.memory.GaussianMixtureMemory.fixed_point`, two
  matmuls per step (the logits ``z Mᵀ − ‖M_k‖²/2`` and the read ``softmax · M``);
- ``naive``: the form that materialises the B×N×d differences, where they fit in
  ``--naive-max-gib``;
- ``chunked``: the library's two matmuls over blocks of ``--chunk`` patterns with a
  streaming log-sum-exp, so memory stays B×chunk, for ``--chunked-size`` (1e6)
  patterns; its agreement with the library at the largest N is printed;
- ``fused``: each step one call of torch's ``scaled_dot_product_attention`` (a fused
  kernel that never holds the B×N weights: flash attention on a CPU, memory-efficient
  or flash attention on a GPU) on keys augmented with the bias,
  ``[z/σ², 1] · [M_k, −‖M_k‖²/2σ²]``, zero-padded to a multiple of 8 wide; a reference
  for what a fused kernel would gain, not the library's path.

A step costs 4·B·N·d flops (two B×N×d multiply-adds); the machine's matmul rate is
measured in the same run on the workload's own shape, (B×d)·(d×N), and the
figure is the library's GFLOP/s over it (target ≥ 0.5 at N = 1e5). On a GPU the
library form also runs in bfloat16 and float16. Times are medians of
``--repeats``.

    python benchmarks/retrieval_throughput.py [--sizes 1000 10000 100000] [--device cuda]

prints one JSON object.
"""

import json
import statistics
import time

import arguments
import torch

from pyromem.memory import GaussianMixtureMemory


def naive_step(z, memory, sigma):
    differences = z.unsqueeze(1) - memory.unsqueeze(0)  # (B, N, d)
    weights = (-differences.pow(2).sum(-1) / (2 * sigma**2)).softmax(-1)
    return weights @ memory


def chunked_step(z, memory, sigma, chunk):
    """The full step over blocks of patterns: a running max, normaliser and read."""
    top = torch.full(z.shape[:-1] + (1,), -torch.inf, dtype=z.dtype, device=z.device)
    total = torch.zeros_like(top)
    read = torch.zeros_like(z)
    for block in memory.split(chunk):
        logits = (z @ block.T - block.pow(2).sum(-1) / 2) / sigma**2
        new_top = torch.maximum(top, logits.amax(-1, keepdim=True))
        rescale = (top - new_top).exp()
        weights = (logits - new_top).exp()
        total = total * rescale + weights.sum(-1, keepdim=True)
        read = read * rescale + weights @ block
        top = new_top
    return read / total


def fused_keys(memory, sigma):
    """The keys of :func:`fused_step`: ``[M_k, −‖M_k‖²/2σ²]``, zero-padded to a multiple of 8."""
    keys = torch.cat([memory, -memory.pow(2).sum(-1, keepdim=True) / (2 * sigma**2)], -1)
    return torch.nn.functional.pad(keys, (0, -keys.shape[-1] % 8))


def fused_step(z, keys, memory, sigma):
    """The full step as one attention call: softmax(q·keysᵀ) M with q = [z/σ², 1, 0...]."""
    ones = torch.ones(z.shape[:-1] + (1,), dtype=z.dtype, device=z.device)
    query = torch.nn.functional.pad(
        torch.cat([z / sigma**2, ones], -1), (0, keys.shape[-1] - z.shape[-1] - 1)
    )
    return torch.nn.functional.scaled_dot_product_attention(
        query[None, None], keys[None, None], memory[None, None], scale=1.0
    )[0, 0]


def fused_fixed_point(z, keys, memory, sigma, steps):
    """``steps`` fused steps from ``z``, on keys built once by :func:`fused_keys`."""
    for _ in range(steps):
        z = fused_step(z, keys, memory, sigma)
    return z


def timed(run, repeats, sync):
    run()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = arguments.Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=arguments.positive_int, nargs="+", default=[1000, 10000, 100000]
    )
    parser.add_argument("--batch", type=arguments.positive_int, default=1024)
    parser.add_argument("--dim", type=arguments.positive_int, default=64)
    parser.add_argument("--steps", type=arguments.positive_int, default=10)
    parser.add_argument("--repeats", type=arguments.positive_int, default=3)
    parser.add_argument("--naive-max-gib", type=float, default=3.0)
    parser.add_argument(
        "--chunked-size", type=arguments.positive_int, default=1_000_000, help="at least --batch"
    )
    parser.add_argument(
        "--chunked-steps", type=arguments.positive_int, default=None, help="None: --steps"
    )
    parser.add_argument("--chunk", type=arguments.positive_int, default=65536)
    arguments.add_device(parser)
    args = parser.parse_args()
    if args.chunked_size < args.batch:
        parser.error(
            f"argument --chunked-size: {args.chunked_size} is less than --batch {args.batch}"
            " (its queries are some of its patterns)"
        )
    device = arguments.device(parser, args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    batch, dim, steps = args.batch, args.dim, args.steps
    sigma = 0.5

    def patterns(n, dtype=torch.float32):
        return torch.randn(n, dim, generator=generator).to(device, dtype)

    rows = []
    for n in args.sizes:
        memory = patterns(n)
        queries = memory[torch.randint(n, (batch,), generator=generator).to(device)]
        z0 = queries + 0.3 * patterns(batch)
        flops = 4 * batch * n * dim * steps
        left = torch.randn(batch, dim, generator=generator).to(device)
        matmul_s = timed(lambda memory=memory, left=left: left @ memory.T, args.repeats, sync)
        matmul_gflops = 2 * batch * n * dim / matmul_s / 1e9
        prior = GaussianMixtureMemory(memory, scale=sigma)

        def library(prior=prior, z0=z0):
            return prior.fixed_point(z0, steps)

        keys = fused_keys(memory, sigma)

        def fused(memory=memory, z0=z0, keys=keys):
            return fused_fixed_point(z0, keys, memory, sigma, steps)

        library_s = timed(library, args.repeats, sync)
        fused_s = timed(fused, args.repeats, sync)
        row = {
            "N": n,
            "library_queries_per_s": batch / library_s,
            "library_gflops": flops / library_s / 1e9,
            "matmul_gflops": matmul_gflops,
            "fraction_of_matmul": flops / library_s / 1e9 / matmul_gflops,
            "fused_queries_per_s": batch / fused_s,
            "fused_fraction_of_matmul": flops / fused_s / 1e9 / matmul_gflops,
            "fused_over_library_speed": library_s / fused_s,
            "max_abs_difference_fused": (library() - fused()).abs().max().item(),
        }
        if batch * n * dim * 4 / 2**30 <= args.naive_max_gib:

            def naive(memory=memory, z0=z0):
                z = z0
                for _ in range(steps):
                    z = naive_step(z, memory, sigma)
                return z

            naive_s = timed(naive, args.repeats, sync)
            row["naive_queries_per_s"] = batch / naive_s
            row["library_over_naive_speed"] = naive_s / library_s
            row["max_abs_difference_naive"] = (library() - naive()).abs().max().item()
        if device.type == "cuda":
            for dtype in (torch.bfloat16, torch.float16):
                low = GaussianMixtureMemory(memory.to(dtype), scale=sigma)
                z_low = z0.to(dtype)

                def reduced(low=low, z_low=z_low):
                    return low.fixed_point(z_low, steps)

                low_memory = memory.to(dtype)
                low_keys = fused_keys(low_memory, sigma)

                def reduced_fused(z_low=z_low, low_memory=low_memory, low_keys=low_keys):
                    return fused_fixed_point(z_low, low_keys, low_memory, sigma, steps)

                name = str(dtype).removeprefix("torch.")
                row[f"{name}_queries_per_s"] = batch / timed(reduced, args.repeats, sync)
                row[f"{name}_fused_queries_per_s"] = batch / timed(
                    reduced_fused, args.repeats, sync
                )
        rows.append(row)

    largest = args.sizes[-1]
    memory = patterns(largest)
    z0 = memory[:batch] + 0.3 * patterns(min(batch, largest))
    # the chunked step equals the library's (blocks of a seventh of the patterns)
    agreement = chunked_step(z0, memory, sigma, max(largest // 7, 1)) - GaussianMixtureMemory(
        memory, scale=sigma
    ).fixed_point_step(z0)
    chunked_steps = args.chunked_steps or steps
    big = patterns(args.chunked_size)
    z_big = big[:batch] + 0.3 * patterns(batch)

    def chunked():
        z = z_big
        for _ in range(chunked_steps):
            z = chunked_step(z, big, sigma, args.chunk)
        return z

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    chunked_s = timed(chunked, max(1, args.repeats // 3), sync)
    chunked_flops = 4 * batch * args.chunked_size * dim * chunked_steps
    chunked_row = {
        "N": args.chunked_size,
        "chunk": args.chunk,
        "steps": chunked_steps,
        "queries_per_s_per_step_set": batch / chunked_s,
        "gflops": chunked_flops / chunked_s / 1e9,
        "working_memory_mib": batch * args.chunk * 4 * 3 / 2**20,
        "max_abs_difference_to_library_at_largest_N": agreement.abs().max().item(),
    }
    if device.type == "cuda":
        chunked_row["peak_cuda_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(
        json.dumps(
            {
                "benchmark": "retrieval_throughput",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "workload": f"{steps} fixed-point steps, B = {batch} queries, d = {dim}, "
                f"sigma = {sigma}, median of {args.repeats}",
                "torch_threads": torch.get_num_threads(),
                "sizes": rows,
                "chunked": chunked_row,
                "target": "fraction_of_matmul >= 0.5 at N = 1e5",
            }
        )
    )


if __name__ == "__main__":
    main()
