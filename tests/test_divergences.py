"""Tests of randsmooth_nb.divergences against independent answers (brute force over events, scipy, mpmath)."""
import itertools
import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as hs
from scipy.stats import entropy

from randsmooth_nb.divergences import (trivial_distance, tv_distance, kl_divergence, renyi_divergence,
                                       transfer_robustness, renyi_to_tv_bound, push_forward,
                                       random_stochastic_matrix, check_distributions, figure_renyi_orders)

SET = settings(max_examples=60, deadline=None)
INF = math.inf
mpmath.mp.dps = 60

# weights with exact zeros and tiny values, normalised into probability vectors
weight = hs.one_of(hs.floats(0, 1), hs.just(0.0), hs.floats(1e-300, 1e-200))


@hs.composite
def dist_pair(draw, min_n=1, max_n=6, full_support_q=False):
    n = draw(hs.integers(min_n, max_n))
    def one(positive):
        w = draw(hs.lists(hs.floats(1e-3, 1) if positive else weight, min_size=n, max_size=n))
        w[draw(hs.integers(0, n - 1))] += draw(hs.floats(1e-3, 1))   # a mass to normalise, without filtering
        return np.array(w) / sum(w)
    return one(False), one(full_support_q)


orders = hs.one_of(hs.floats(1, 30), hs.sampled_from([1, 1 + 1e-9, 2, 1e6, INF]))


def renyi_mp(p, q, a):
    "Textbook formula in 60-digit arithmetic (independent of the library's log-space tricks)."
    p, q = [mpmath.mpf(float(x)) for x in p], [mpmath.mpf(float(x)) for x in q]
    sp, sq = sum(p), sum(q)
    p, q = [x / sp for x in p], [y / sq for y in q]
    if any(x > 0 and y == 0 for x, y in zip(p, q)): return INF
    if a == INF: return float(mpmath.log(max(x / y for x, y in zip(p, q) if x > 0)))
    if a == 1: return float(sum(x * mpmath.log(x / y) for x, y in zip(p, q) if x > 0))
    return float(mpmath.log(sum(x**a * y**(1 - a) for x, y in zip(p, q) if x > 0)) / (a - 1))


def tv_brute_force(p, q):
    n = len(p)
    return max(abs(sum(p[i] - q[i] for i in A)) for k in range(n + 1) for A in itertools.combinations(range(n), k))


# ---------------------------------------------------------------- against independent answers
@SET
@given(pq=dist_pair())
def test_tv_is_sup_over_events(pq):
    p, q = pq
    assert tv_distance(p, q).item() == pytest.approx(tv_brute_force(p, q), abs=1e-12)


@SET
@given(pq=dist_pair())
def test_kl_matches_scipy(pq):
    p, q = pq
    ref = entropy(p, q)
    got = kl_divergence(p, q).item()
    assert got == ref if math.isinf(ref) else got == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert renyi_divergence(p, q, 1).item() == got


@SET
@given(pq=dist_pair(), a=orders)
def test_renyi_matches_mpmath(pq, a):
    p, q = pq
    ref = renyi_mp(p, q, a)
    got = renyi_divergence(p, q, a).item()
    if math.isinf(ref): assert got == INF
    else: assert got == pytest.approx(ref, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize('a', [1, 1.5, 2, 10, INF])
def test_tiny_probabilities(a):
    for p, q in [([1e-300, 1.], [1e-310, 1.]), ([1e-200, 1.], [1e-300, 1.]), ([0.5, 0.5], [1e-300, 1.])]:
        got = renyi_divergence(p, q, a).item()
        assert math.isfinite(got) and got == pytest.approx(renyi_mp(p, q, a), rel=1e-9)


def test_nearly_normalised_input_is_renormalised():
    p, q = [0.3, 0.7 + 5e-7], [0.6, 0.4]          # sums to 1 within the 1e-6 tolerance
    for a in [1, 1 + 1e-6, 2, INF]:
        assert renyi_divergence(p, q, a).item() == pytest.approx(renyi_mp(p, q, a), rel=1e-8)


# ---------------------------------------------------------------- axioms and structure
@SET
@given(pq=dist_pair(), a=orders)
def test_divergence_axioms(pq, a):
    p, q = pq
    for d in [tv_distance(p, q), kl_divergence(p, q), renyi_divergence(p, q, a), trivial_distance(p, q)]:
        assert not torch.isnan(d) and d.item() >= 0
    for f in [tv_distance, kl_divergence, trivial_distance, lambda x, y: renyi_divergence(x, y, a)]:
        assert f(p, p).item() == 0 and f(q, q).item() == 0
    tv = tv_distance(p, q).item()
    assert tv == pytest.approx(tv_distance(q, p).item(), abs=1e-15)          # TV is symmetric
    assert tv <= trivial_distance(p, q).item() and tv <= 1
    if tv > 1e-6: assert renyi_divergence(p, q, a).item() > 0 and trivial_distance(p, q).item() == 1


@SET
@given(n=hs.integers(1, 6), data=hs.data())
def test_tv_triangle_inequality(n, data):
    ps = []
    for _ in range(3):
        w = data.draw(hs.lists(weight, min_size=n, max_size=n))
        w[data.draw(hs.integers(0, n - 1))] += data.draw(hs.floats(1e-3, 1))   # a mass to normalise, without filtering
        ps.append(np.array(w) / sum(w))
    p, q, r = ps
    assert tv_distance(p, r).item() <= tv_distance(p, q).item() + tv_distance(q, r).item() + 1e-12


@SET
@given(pq=dist_pair(), o=hs.lists(orders, min_size=2, max_size=6))
def test_renyi_non_decreasing_in_order(pq, o):
    p, q = pq
    o = sorted(o)
    v = [renyi_divergence(p, q, a).item() for a in o]
    for (a, x), y in zip(zip(o, v), v[1:]):
        assert y == INF or (x < INF and y >= x - 1e-9 * max(1, x)), (o, v)


@SET
@given(pq=dist_pair(full_support_q=True))
def test_order_one_limit_and_infinity_limit(pq):
    p, q = pq
    kl = kl_divergence(p, q).item()
    assert renyi_divergence(p, q, 1 + 1e-6).item() == pytest.approx(kl, rel=1e-4, abs=1e-9)
    dmax = renyi_divergence(p, q, INF).item()
    assert renyi_divergence(p, q, 1e9).item() == pytest.approx(dmax, rel=1e-6, abs=1e-8)


@SET
@given(pq=dist_pair(), a=orders)
def test_tv_below_proposition_1_bound(pq, a):
    p, q = pq
    tv = tv_distance(p, q).item()
    assert tv <= renyi_to_tv_bound(renyi_divergence(p, q, a)).item() + 1e-12
    # the bound is the smaller of Pinsker's and Bretagnolle-Huber's, checked from their formulas
    e = renyi_divergence(p, q, a).item()
    assert renyi_to_tv_bound(e).item() == pytest.approx(min(math.sqrt(e / 2), math.sqrt(1 - math.exp(-e))), abs=1e-14)


@SET
@given(pq=dist_pair(), m=hs.integers(1, 6), seed=hs.integers(0, 2**31 - 1), det=hs.booleans(), a=orders)
def test_data_processing_inequality(pq, m, seed, det, a):
    p, q = pq
    K = random_stochastic_matrix(len(p), m, torch.Generator().manual_seed(seed), deterministic=det)
    pk, qk = push_forward(p, K), push_forward(q, K)
    np.testing.assert_allclose(pk.numpy(), np.asarray(p) @ K.numpy(), atol=1e-15)
    assert tv_distance(pk, qk).item() <= tv_distance(p, q).item() + 1e-12
    d0, d1 = renyi_divergence(p, q, a).item(), renyi_divergence(pk, qk, a).item()
    assert d0 == INF or d1 <= d0 + 1e-9 * max(1, d0)


def test_batching_and_broadcasting():
    g = torch.Generator().manual_seed(0)
    P = random_stochastic_matrix(5, 4, g); Q = random_stochastic_matrix(3, 4, g)
    D = renyi_divergence(P[:, None], Q[None], 2.5)
    assert D.shape == (5, 3) and D.dtype == torch.float64
    for i in range(5):
        for j in range(3):
            assert D[i, j].item() == pytest.approx(renyi_mp(P[i].tolist(), Q[j].tolist(), 2.5), rel=1e-9)
    assert tv_distance(P[:, None], Q[None]).shape == (5, 3)
    K = torch.stack([random_stochastic_matrix(4, 2, g) for _ in range(5)])
    assert push_forward(P, K).shape == (5, 2)


def test_random_stochastic_matrix():
    g = torch.Generator().manual_seed(1)
    K = random_stochastic_matrix(200, 3, g)
    assert (K >= 0).all() and torch.allclose(K.sum(-1), torch.ones(200, dtype=torch.float64))
    assert torch.allclose(K.mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.05)   # uniform on the simplex
    D = random_stochastic_matrix(6, 4, g, deterministic=True)
    assert ((D == 0) | (D == 1)).all() and (D.sum(-1) == 1).all()
    a = random_stochastic_matrix(3, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, random_stochastic_matrix(3, 3, torch.Generator().manual_seed(5)))


def test_lemma_1_transfer():
    assert transfer_robustness(0.5, lambda e: 2 * e) == 1.0
    # Lemma 1 on a toy probabilistic mapping: every input at risk for (TV, phi(eps)) is at risk for (KL, eps)
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 2, generator=g, dtype=torch.float64) * 3
    M = lambda x: torch.softmax(x @ W.T, -1)
    xs = torch.randn(300, 2, generator=g, dtype=torch.float64)
    ang = torch.linspace(0, 2 * math.pi, 25, dtype=torch.float64)[:-1]
    taus = 0.2 * torch.stack([ang.cos(), ang.sin()], -1)
    worst = lambda d: d(M(xs[:, None] + taus), M(xs)[:, None]).amax(-1)
    kl, tv = worst(kl_divergence), worst(tv_distance)
    for eps in [1e-3, 1e-2, 0.1, 1.]:
        assert not ((tv > transfer_robustness(eps, renyi_to_tv_bound)) & ~(kl > eps)).any()


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('order', [0.999, 0, -2, float('nan'), 'x', None])
def test_bad_order(order):
    with pytest.raises(ValueError, match=r'order must be in \[1, inf\]'): renyi_divergence([0.5, 0.5], [0.5, 0.5], order)


@pytest.mark.parametrize('p,match', [([0.3, 0.6], 'sum to 1'), ([1.2, -0.2], r'entries in \[0, 1\]'),
                                     ([float('nan'), 1.], r'entries in \[0, 1\]'), ([INF, 0.], 'sum to 1'),
                                     (0.5, 'last axis'), ([], 'last axis'), ('ab', r'entries in \[0, 1\]')])
def test_bad_distribution(p, match):
    for f in [tv_distance, kl_divergence, trivial_distance, lambda a, b: renyi_divergence(a, b, 2)]:
        with pytest.raises(ValueError, match=match): f(p, [0.5, 0.5])
        with pytest.raises(ValueError, match=match): f([0.5, 0.5], p)


def test_bad_shapes_and_kernels():
    with pytest.raises(ValueError, match='same number of outcomes'): tv_distance([0.5, 0.5], [1 / 3] * 3)
    with pytest.raises(ValueError, match='broadcastable'): check_distributions(torch.full((3, 2), 0.5), torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match='sum to 1'): push_forward([0.5, 0.5], [[0.5, 0.4], [0.5, 0.5]])
    with pytest.raises(ValueError, match=r'entries in \[0, 1\]'): push_forward([0.5, 0.5], [[1.5, -0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match='must be equal'): push_forward([0.5, 0.5], torch.eye(3))
    with pytest.raises(ValueError, match='matrix'): push_forward([1.], [1.])
    with pytest.raises(ValueError, match=r'epsilon must be in \[0, inf\]'): renyi_to_tv_bound(-1e-3)
    with pytest.raises(ValueError, match=r'epsilon must be in \[0, inf\]'): renyi_to_tv_bound([0.1, float('nan')])
    with pytest.raises(ValueError, match=r'atol must be in \[0, inf\)'): trivial_distance([1.], [1.], atol=-1)
    with pytest.raises(ValueError, match='n_out must be an integer >= 1'): random_stochastic_matrix(2, 0)


def test_figure():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    fig = figure_renyi_orders(orders=[1.5, 3, 10])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    plt.close(fig)
