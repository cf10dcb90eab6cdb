"""VIMCO against its number of particles K: gradient variance, and peak memory against RenyiELBO.

The model is a discrete address over 8 slots with a Gaussian latent and a 16-d Gaussian
observation, N datapoints in a data plate:
a ~ Cat(1/8), z | a ~ N(c_a, I), x | z, a ~ N(W z + m_a, 0.5² I);
q(a | x) = Cat(softmax(U x + b)), q(z | x, a) = N(A x + d_a, diag σ²).

- **Gradient variance**: for each K, ``--repeats`` independent VIMCO gradients of the
  address parameters (U, b) on the same N datapoints; reported as the trace of their
  covariance and the norm of their mean (the loss sums over the N datapoints).
- **Peak memory** of one ``loss_and_grads`` at each K, for ``pyromem.infer.VIMCO(K)`` and
  ``pyro.infer.RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True)`` (the same
  K-sample bound), each in a fresh process after a warm-up step at K = 2: on CUDA
  ``torch.cuda.max_memory_allocated`` over what was allocated before the step; on CPU
  (Linux) the rise of the process's peak resident set during the step, its high-water
  mark (VmHWM) being reset to the current resident set just before (``/proc/self/clear_refs``).
  The CPU figure counts every page the step touches (torch's tensors, the allocator's
  slack, Python objects) to the resolution of a page, less any the allocator reuses from
  memory already resident; tracemalloc would not see torch's allocations.

    python benchmarks/vimco_scaling.py                          # K up to 5000, CPU
    python benchmarks/vimco_scaling.py --device cuda
    python benchmarks/vimco_scaling.py --memory-particles 2000  # the note's K = 2000, N = 20
"""

import argparse
import json
import subprocess
import sys

import arguments
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import RenyiELBO
from pyro.nn import PyroModule

from pyromem.infer import VIMCO
from pyromem.models.plates import data_plate

SLOTS, LATENT, DIM = 8, 4, 16
ESTIMATORS = ("vimco", "renyi")


class AddressModel(PyroModule):
    """The benchmark's model and guide (see the module docstring)."""

    def __init__(self, device):
        super().__init__()
        g = torch.Generator().manual_seed(0)

        def param(*shape):
            return torch.nn.Parameter(0.5 * torch.randn(*shape, generator=g).to(device))

        self.prior_locs, self.weight, self.means = (
            param(SLOTS, LATENT),
            param(LATENT, DIM),
            param(SLOTS, DIM),
        )
        self.query, self.guide_logits = param(DIM, SLOTS), param(SLOTS)
        self.encoder, self.offsets, self.raw_scale = (
            param(DIM, LATENT),
            param(SLOTS, LATENT),
            param(LATENT),
        )

    def model(self, x):
        with data_plate(x):
            a = pyro.sample("a", dist.Categorical(logits=torch.zeros(SLOTS, device=x.device)))
            z = pyro.sample("z", dist.Normal(self.prior_locs[a], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.weight + self.means[a], 0.5).to_event(1), obs=x)

    def guide(self, x):
        with data_plate(x):
            a = pyro.sample("a", dist.Categorical(logits=x @ self.query + self.guide_logits))
            scale = torch.nn.functional.softplus(self.raw_scale)
            pyro.sample("z", dist.Normal(x @ self.encoder + self.offsets[a], scale).to_event(1))

    def data(self, num_data):
        """N observations drawn from the model."""
        g = torch.Generator().manual_seed(1)
        device = self.means.device
        a = torch.randint(SLOTS, (num_data,), generator=g).to(device)
        z = self.prior_locs[a] + torch.randn(num_data, LATENT, generator=g).to(device)
        noise = 0.5 * torch.randn(num_data, DIM, generator=g).to(device)
        return (z @ self.weight + self.means[a] + noise).detach()


def estimator(name, k):
    if name == "vimco":
        return VIMCO(num_particles=k, max_plate_nesting=1)
    return RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)


def gradient_variance(model, x, particles, repeats):
    """Trace of the covariance, and norm of the mean, of VIMCO's gradient for (U, b)."""
    address = [model.query, model.guide_logits]
    result = {"particles": particles, "grad_variance": [], "grad_mean_norm": []}
    for k in particles:
        elbo, grads = VIMCO(num_particles=k, max_plate_nesting=1), []
        for _ in range(repeats):
            model.zero_grad()
            elbo.differentiable_loss(model.model, model.guide, x).backward()
            grads.append(torch.cat([p.grad.flatten() for p in address]))
        grads = torch.stack(grads)
        result["grad_variance"].append(round(grads.var(0).sum().item(), 4))
        result["grad_mean_norm"].append(round(grads.mean(0).norm().item(), 4))
        print(f"variance: K = {k} done", file=sys.stderr)
    return result


def peak_memory_mib(name, k, num_data, device):
    """Peak memory of one ``loss_and_grads`` at K particles, in this process (see above)."""
    model = AddressModel(device)
    x = model.data(num_data)
    pyro.set_rng_seed(0)
    estimator(name, 2).loss_and_grads(model.model, model.guide, x)  # warm-up: lazy set-up
    elbo = estimator(name, k)
    model.zero_grad()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        elbo.loss_and_grads(model.model, model.guide, x)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = reset_peak_rss()
    elbo.loss_and_grads(model.model, model.guide, x)
    return (peak_rss() - before) / 2**10


def peak_rss():
    """The process's peak resident set in KiB (Linux's VmHWM)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def reset_peak_rss():
    """Resets the peak resident set to the current one (Linux >= 4.0), and returns it in KiB."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return peak_rss()


def main():
    parser = arguments.Parser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--particles", type=arguments.at_least_two, nargs="+", default=[2, 4, 8, 16, 32, 64]
    )
    parser.add_argument(
        "--repeats", type=arguments.at_least_two, default=200, help="gradients per K"
    )
    parser.add_argument(
        "--memory-particles", type=arguments.at_least_two, nargs="*", default=[100, 1000, 5000]
    )
    parser.add_argument(
        "--num-data", type=arguments.positive_int, default=20, help="N, datapoints per step"
    )
    arguments.add_device(parser)
    parser.add_argument("--child", nargs=2, metavar=("ESTIMATOR", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = arguments.device(parser, args.device)
    if args.child:
        name, k = args.child
        print(json.dumps({"mib": peak_memory_mib(name, int(k), args.num_data, device)}))
        return

    torch.manual_seed(0)
    model = AddressModel(device)
    variance = gradient_variance(model, model.data(args.num_data), args.particles, args.repeats)
    memory = {name: {} for name in ESTIMATORS}
    for k in args.memory_particles:
        for name in ESTIMATORS:
            command = [sys.executable, __file__, "--child", name, str(k)]
            command += ["--num-data", str(args.num_data), "--device", args.device]
            run = subprocess.run(command, capture_output=True, text=True, check=True)
            memory[name][str(k)] = round(json.loads(run.stdout)["mib"], 1)
            print(f"memory: {name} K = {k}: {memory[name][str(k)]} MiB", file=sys.stderr)
    method = (
        "torch.cuda.max_memory_allocated over the step"
        if device.type == "cuda"
        else "rise of the peak resident set (VmHWM, reset before the step), fresh process"
    )
    print(
        json.dumps(
            {
                "benchmark": "vimco_scaling",
                "device": str(device),
                "device_name": arguments.device_name(device),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "num_data": args.num_data,
                "variance": {"repeats": args.repeats, **variance},
                "peak_memory_mib": {"method": method, **memory},
            }
        )
    )


if __name__ == "__main__":
    main()
