"""A linear-Gaussian model with a closed-form evidence and posterior, for tests.

z ~ N(0, I_d),  x | z ~ N(W z + b, σ² I_D):
    p(x) = N(x; b, W Wᵀ + σ² I),
    p(z | x) = N(Λ⁻¹ Wᵀ (x − b) / σ², Λ⁻¹) with Λ = I + Wᵀ W / σ².
"""

import pyro
import pyro.distributions as dist
import torch


class LinearGaussian:
    def __init__(self, latent_dim=2, obs_dim=3, sigma=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(obs_dim, latent_dim, generator=g, dtype=torch.float64)
        self.b = torch.randn(obs_dim, generator=g, dtype=torch.float64)
        self.sigma = sigma
        self.latent_dim = latent_dim
        precision = torch.eye(latent_dim, dtype=torch.float64) + self.W.T @ self.W / sigma**2
        self.posterior_cov = torch.linalg.inv(precision)

    def model(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
            z = pyro.sample(
                "z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1).expand([len(x)])
            )
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def posterior_loc(self, x):
        return (x - self.b) @ self.W / self.sigma**2 @ self.posterior_cov

    def exact_guide(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
            pyro.sample("z", dist.MultivariateNormal(self.posterior_loc(x), self.posterior_cov))

    def weak_guide(self, x, num_data=None, scale=1.0):
        """A deliberately poor guide: the posterior mean shrunk to zero, a wrong scale."""
        with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
            pyro.sample("z", dist.Normal(0.3 * self.posterior_loc(x), scale).to_event(1))

    def log_evidence(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(len(self.b), dtype=torch.float64)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def sample(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=g, dtype=torch.float64)
        return (
            z @ self.W.T
            + self.b
            + self.sigma * torch.randn(n, len(self.b), generator=g, dtype=torch.float64)
        )
