"""The address's per-slot work, done once: the slots' norms shared by q(a | x) and p(a | M),
and log q(a | x) of K particles read from the logits as built; each against its direct form."""

import pytest
import torch
from torch import nn

from pyromem.memory.addressing import EPS, Addressing, InverseCDFCategorical, SlotKeys, similarity


@pytest.mark.parametrize("kind", ["normalized", "dot", "cosine"])
def test_posterior_and_prior_logits_are_eq_5_with_shared_norms(kind):
    torch.manual_seed(0)
    embeddings, queries = torch.randn(7, 3), torch.randn(4, 3)
    addressing = Addressing(nn.Identity(), nn.Identity(), 3, kind)
    addressing.prior_query.data = torch.randn(3)
    keys = addressing.keys(embeddings)
    assert isinstance(keys, SlotKeys)

    def by_hand(query):
        scores = query @ embeddings.T
        if kind != "dot":
            scores = scores / (embeddings.norm(dim=-1) + EPS)
        if kind == "cosine":
            scores = scores / (query.norm(dim=-1, keepdim=True) + EPS)
        return scores

    for given in (keys, embeddings):  # SlotKeys, or the embeddings themselves
        torch.testing.assert_close(addressing.posterior_logits(given, queries), by_hand(queries))
        prior = addressing.prior_logits(given)
        torch.testing.assert_close(prior, by_hand(addressing.prior_query))
    torch.testing.assert_close(similarity(embeddings, queries, kind), by_hand(queries))


@pytest.mark.parametrize("value_shape", [(5, 3), (3,), (5, 1), (2, 5, 3)])
def test_log_prob_of_particles_is_categoricals_with_its_gradient(value_shape):
    torch.manual_seed(1)
    logits = torch.randn(3, 6, requires_grad=True)
    value = torch.randint(6, value_shape)
    ours = InverseCDFCategorical(logits=logits).expand((5, 3)).log_prob(value)
    reference = torch.distributions.Categorical(logits=logits).expand((5, 3)).log_prob(value)
    torch.testing.assert_close(ours, reference)
    weights = torch.randn(reference.shape)
    (ours_grad,) = torch.autograd.grad((weights * ours).sum(), logits)
    (reference_grad,) = torch.autograd.grad((weights * reference).sum(), logits)
    torch.testing.assert_close(ours_grad, reference_grad)


def test_log_prob_of_an_enumerated_support_and_of_draws():
    torch.manual_seed(2)
    address = InverseCDFCategorical(logits=torch.randn(3, 4)).expand((2, 3))
    support = address.enumerate_support(expand=False)
    reference = torch.distributions.Categorical(logits=address.logits)
    torch.testing.assert_close(address.log_prob(support), reference.log_prob(support))
    draws = address.sample((7,))
    assert draws.shape == (7, 2, 3)
    torch.testing.assert_close(address.log_prob(draws), reference.log_prob(draws))
