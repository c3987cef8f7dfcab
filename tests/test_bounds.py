"Property tests for randsmooth_nb.bounds against independent closed forms, quadrature, scipy CDFs and brute force."
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate, stats

from randsmooth_nb.bounds import (LinearMapping, ThresholdMapping, entropy, exact_renyi_sup, guaranteed_accuracy,
                                  pc_risk, renyi_sup_maximiser, risk, risk_gap_bound, theorem1_epsilon,
                                  theorem3_certified, theorem3_radius)
from randsmooth_nb.expfamily import DiagonalGaussian, Gaussian, Laplace

ORDERS = st.sampled_from([1.0, 1.2, 2.0, 5.0, 30.0, math.inf])
NORMS = st.sampled_from([1.0, 2.0, 3.0, math.inf])



# one torch thread per test process: see conftest.py

# ---------------------------------------------------------------- independent divergence formulas

def laplace_renyi_1d(t, lam):
    "D_lam(Lap(t, 1) || Lap(0, 1)) for a shift of t scales (own closed form)."
    t = np.abs(np.asarray(t, dtype=np.float64))
    if lam == 1: return t + np.exp(-t) - 1
    if math.isinf(lam): return t
    # (1/(lam-1)) log(lam/(2lam-1) e^{(lam-1)t} + (lam-1)/(2lam-1) e^{-lam t}), with e^{(lam-1)t} factored out
    return t + np.log(lam / (2 * lam - 1) + (lam - 1) / (2 * lam - 1) * np.exp(-(2 * lam - 1) * t)) / (lam - 1)


def laplace_renyi_quad(t, lam):
    "The same by numerical integration of p^lam q^(1-lam) (or p log p/q)."
    p = lambda z: 0.5 * np.exp(-abs(z - t)); q = lambda z: 0.5 * np.exp(-abs(z))
    pts = sorted({0.0, t})
    if lam == 1:
        return integrate.quad(lambda z: p(z) * (abs(z) - abs(z - t)), -60, 60, points=pts, limit=200)[0]
    v = integrate.quad(lambda z: p(z) ** lam * q(z) ** (1 - lam), -60, 60, points=pts, limit=200)[0]
    return np.log(v) / (lam - 1)


def true_divergence(noise, delta, lam):
    "D_lam(noise + delta || noise), summed over the last axis, from the independent formulas."
    delta = np.asarray(delta, dtype=np.float64)
    if isinstance(noise, Gaussian):
        sd = noise.sd.numpy() if isinstance(noise, DiagonalGaussian) else noise.sd
        if math.isinf(lam): return np.where((delta != 0).any(-1), np.inf, 0.0)
        return lam * (delta ** 2 / sd ** 2).sum(-1) / 2
    return laplace_renyi_1d(delta / noise.scale, lam).sum(-1)


def random_ball(n, d, p, alpha, seed):
    g = np.random.default_rng(seed)
    u = g.standard_normal((n, d))
    u = np.concatenate([u, u ** 3, np.sign(u), np.eye(d), np.ones((1, d))])
    u = u / np.linalg.norm(u, ord=p, axis=-1, keepdims=True)
    return alpha * u * g.uniform(0.5, 1.0, (len(u), 1)) ** 0.1   # mostly near the sphere, all inside


def make_noise(kind, sd, d):
    if kind == 'gaussian': return Gaussian(sd)
    if kind == 'diag': return DiagonalGaussian(sd * np.linspace(0.6, 1.5, d))
    return Laplace(sd)


# ---------------------------------------------------------------- Theorem 1 and the exact supremum

@pytest.mark.parametrize('t', [0.0, 0.3, 1.0, 4.0])
@pytest.mark.parametrize('lam', [1.0, 1.5, 2.0, 7.0])
def test_laplace_sup_l1_matches_quadrature(t, lam):
    noise = Laplace(math.sqrt(2))   # scale 1
    assert float(exact_renyi_sup(noise, t, 1, lam)) == pytest.approx(laplace_renyi_quad(t, lam), rel=1e-6, abs=1e-10)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(['gaussian', 'diag', 'laplace']), sd=st.floats(0.05, 3), d=st.integers(1, 6),
       p=NORMS, lam=ORDERS, alpha=st.one_of(st.just(0.0), st.floats(1e-9, 3)), seed=st.integers(0, 10**6))
def test_theorem1_and_exact_sup_dominate_random_shifts(kind, sd, d, p, lam, alpha, seed):
    # alpha is 0 or >= 1e-9: a subnormal shift such as 5e-324 underflows to a divergence of exactly 0 in float64
    noise = make_noise(kind, sd, d)
    deltas = random_ball(300, d, p, alpha, seed)
    div = true_divergence(noise, deltas, lam)
    eps1 = float(theorem1_epsilon(noise, alpha, lam, p, d))
    sup = float(exact_renyi_sup(noise, alpha, p, lam, d))
    assert not math.isnan(eps1) and not math.isnan(sup)
    assert (div <= sup * (1 + 1e-9) + 1e-12).all()
    assert sup <= eps1 * (1 + 1e-9) + 1e-12                          # Theorem 1 is a bound on the exact value
    z = renyi_sup_maximiser(noise, alpha, p, lam, d).numpy()        # and the supremum is attained
    assert np.linalg.norm(z, ord=p) == pytest.approx(alpha, abs=1e-12)
    attained = float(true_divergence(noise, z, lam))
    if math.isinf(sup): assert math.isinf(attained) or alpha == 0
    else: assert attained == pytest.approx(sup, rel=1e-9, abs=1e-12)
    # the noise's own renyi_shift agrees at the maximiser
    rs = float(noise.renyi_shift(torch.as_tensor(z), lam))
    assert rs == pytest.approx(attained, rel=1e-6, abs=1e-12) or (math.isinf(rs) and math.isinf(attained))


def test_theorem1_closed_forms_and_sqrt_d_gap():
    d = 3072
    lap = Laplace(0.5); b = lap.scale
    # Theorem 1 for Laplace = sqrt(d)/b * alpha on the l_1 ball, exact max-divergence alpha/b
    assert float(theorem1_epsilon(lap, 0.1, 1.0, 1, d)) == pytest.approx(math.sqrt(d) * 0.1 / b)
    assert float(exact_renyi_sup(lap, 0.1, 1, math.inf, d)) == pytest.approx(0.1 / b)
    # tight for the max-divergence on l_2 and l_inf balls
    for p in [2, math.inf]:
        assert float(theorem1_epsilon(lap, 0.1, 3.0, p, d)) == pytest.approx(float(exact_renyi_sup(lap, 0.1, p, math.inf, d)))
    # Gaussian: lambda Delta_2^2 / (2 sigma_min^2), with the l_inf -> l_2 factor
    assert float(theorem1_epsilon(Gaussian(2.0), 0.5, 3.0, 'inf', 16)) == pytest.approx(3 * (0.5 * 4) ** 2 / (2 * 4))
    assert float(theorem1_epsilon(DiagonalGaussian([0.5, 2.0]), 0.3, 2.0)) == pytest.approx(2 * 0.09 / (2 * 0.25))


# ---------------------------------------------------------------- Definitions 2 and 5, entropy

@settings(max_examples=30, deadline=None)
@given(k=st.integers(2, 6), n=st.integers(1, 20), seed=st.integers(0, 10**6))
def test_entropy_and_risk_vs_scipy(k, n, seed):
    g = np.random.default_rng(seed)
    P = g.dirichlet(np.full(k, 0.3), size=n)
    P[0] = 0; P[0, 0] = 1                          # a point mass: 0 log 0 = 0
    assert np.allclose(entropy(torch.tensor(P)).numpy(), stats.entropy(P, axis=1), atol=1e-12)
    y = g.integers(0, k, n); w = g.uniform(0.1, 1, n)
    expected = np.sum(w * (1 - P[np.arange(n), y])) / w.sum()
    assert float(risk(torch.tensor(P), torch.tensor(y), torch.tensor(w))) == pytest.approx(expected)
    div = g.exponential(1, n)
    assert float(pc_risk(div, 0.7)) == pytest.approx(np.mean(div > 0.7))


# ---------------------------------------------------------------- Theorem 2 on the toy model

def toy_exact(noise, threshold, x, y, alpha):
    "Risk and adversarial risk of the threshold mapping from scipy's CDFs (independent of ThresholdMapping)."
    dist = stats.norm(scale=noise.sd) if isinstance(noise, Gaussian) else stats.laplace(scale=noise.scale)
    p1 = lambda v: dist.sf(threshold - v)          # P(label 1)
    err = np.where(y == 1, 1 - p1(x), p1(x))
    adv = np.where(y == 1, 1 - p1(x - alpha), p1(x + alpha))
    return err, adv, p1(x)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(['gaussian', 'laplace']), sd=st.floats(0.05, 2), threshold=st.floats(-0.5, 0.5),
       label_noise=st.floats(0, 0.4), alpha=st.floats(0, 2), seed=st.integers(0, 10**6))
def test_theorem2_on_toy(kind, sd, threshold, label_noise, alpha, seed):
    noise = make_noise(kind, sd, 1)
    g = np.random.default_rng(seed)
    x = np.concatenate([g.normal(-1, 0.7, 150), g.normal(1, 0.7, 150)])
    y_clean = (x > 0).astype(int)
    xx, yy = np.concatenate([x, x]), np.concatenate([y_clean, 1 - y_clean])
    w = np.concatenate([np.full(300, 1 - label_noise), np.full(300, label_noise)]) / 300
    err, adv, p1 = toy_exact(noise, threshold, xx, yy, alpha)
    gap = abs(np.sum(w * adv) - np.sum(w * err))
    M = ThresholdMapping(threshold, noise)
    # the mapping's own exact risks agree with scipy
    assert float(risk(M.probs(torch.tensor(xx)), torch.tensor(yy), torch.tensor(w))) == pytest.approx(np.sum(w * err), abs=1e-10)
    H = stats.entropy(np.stack([1 - p1[:300], p1[:300]], 1), axis=1)
    eps = exact_renyi_sup(noise, alpha, 2, 1.0, dim=1)
    bound = float(risk_gap_bound(eps, torch.tensor(H)))
    assert gap <= bound + 1e-12
    acc = 1 - np.sum(w * err)
    assert float(guaranteed_accuracy(acc, eps, torch.tensor(H))) <= 1 - np.sum(w * adv) + 1e-12


def test_risk_gap_bound_shapes_and_edges():
    H = torch.tensor([0.1, 0.5])
    b = risk_gap_bound(torch.tensor([0.0, 1.0, math.inf]), H)
    assert b.shape == (3,) and float(b[2]) == 1.0
    assert float(b[0]) == pytest.approx(1 - np.mean(np.exp(-H.numpy())))
    assert float(guaranteed_accuracy(0.2, 5.0, H)) == 0.0      # clipped


# ---------------------------------------------------------------- Theorem 3

def brute_certified(top, r, eps, lam, n=20001):
    ds = np.logspace(-300, -1e-12, n) if math.isinf(lam) else np.logspace(-14, -1e-12, n)
    ep = eps + (0 if math.isinf(lam) else np.log(1 / ds) / (lam - 1))
    with np.errstate(over='ignore', invalid='ignore'):
        m = top - np.exp(2 * ep) * r - (1 + np.exp(ep)) * ds
    return np.nanmax(m) > 0


@settings(max_examples=40, deadline=None)
@given(top=st.floats(0, 1), frac=st.floats(0, 1), eps=st.floats(0, 3), lam=st.sampled_from([1.05, 2.0, 3.0, 10.0, 200.0, math.inf]))
def test_theorem3_certified_vs_grid(top, frac, eps, lam):
    r = top * frac
    res = theorem3_certified(torch.tensor([top, r, r / 2], dtype=torch.float64), eps, lam)
    assert not torch.isnan(res.margin).any()
    if brute_certified(top, r, eps, lam): assert bool(res.certified)
    if bool(res.certified):   # the returned delta* really satisfies the inequality
        ds = float(res.delta_star)
        assert 0 < ds < 1
        ep = eps + (0 if math.isinf(lam) else math.log(1 / ds) / (lam - 1))
        assert top > math.exp(2 * ep) * r + (1 + math.exp(ep)) * ds


@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(['gaussian', 'laplace']), sd=st.floats(0.1, 2), threshold=st.floats(-1, 1), seed=st.integers(0, 10**6))
def test_theorem3_radius_true_on_threshold_toy(kind, sd, threshold, seed):
    noise = make_noise(kind, sd, 1)
    x = threshold + np.random.default_rng(seed).uniform(-6 * sd, 6 * sd, 40)
    M = ThresholdMapping(threshold, noise)
    rad = theorem3_radius(M.probs(torch.tensor(x)), noise, 2, dim=1, orders=[1.5, 3.0, 10.0, 100.0, math.inf])
    true = np.abs(x - threshold)
    assert not torch.isnan(rad).any()
    assert (rad.numpy() <= true + 1e-12).all()
    assert (rad.numpy() > 0).mean() > 0.5


@settings(max_examples=10, deadline=None)
@given(p=st.sampled_from([1.0, 2.0, math.inf]), sd=st.floats(0.1, 1.5), seed=st.integers(0, 10**6))
def test_theorem3_radius_true_on_linear_toy(p, sd, seed):
    g = np.random.default_rng(seed)
    w, b = g.normal(size=2), g.normal()
    M = LinearMapping(w, b, Gaussian(sd))
    X = torch.tensor(g.normal(size=(60, 2)) * 2)
    rad = theorem3_radius(M.probs(X), M.noise, p, dim=2, orders=[1.5, 4.0, 30.0, 300.0])
    q = {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[p]
    true = np.abs(X.numpy() @ w + b) / np.linalg.norm(w, ord=q)
    assert (rad.numpy() <= true + 1e-12).all()


@pytest.mark.parametrize('noise', [Gaussian(0.5), Laplace(0.5)])
def test_theorem3_radius_is_optimal_on_a_grid(noise):
    "For a single order, the radius matches a brute-force search over (alpha, delta*) grids."
    lam = 4.0
    for top, r in [(0.9, 0.1), (0.99, 0.005), (0.7, 0.3)]:
        rad = float(theorem3_radius(torch.tensor([top, r]), noise, 1, dim=1, orders=[lam]))
        alphas = np.linspace(0, 3, 3001)
        ok = [brute_certified(top, r, float(exact_renyi_sup(noise, a, 1, lam)), lam, n=4001) for a in alphas]
        best = alphas[np.nonzero(ok)[0].max()] if any(ok) else 0.0
        assert best <= rad + 1e-9 and rad <= best + 3 / 3000 + 1e-3 * rad, (top, r, rad, best)


def test_theorem3_edge_scores_never_nan():
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [1e-300, 0.0]], dtype=torch.float64)
    for noise in [Gaussian(0.3), Laplace(0.3)]:
        rad = theorem3_radius(s, noise, 2, dim=4, orders=[2.0, 50.0, math.inf])
        assert not torch.isnan(rad).any() and (rad >= 0).all()
        assert float(rad[1]) == 0 and float(rad[2]) == 0 and float(rad[3]) == 0
        assert float(rad[0]) > 0
    res = theorem3_certified(s, math.inf, 2.0)
    assert not res.certified.any() and not torch.isnan(res.margin).any()


# ---------------------------------------------------------------- errors

def test_bad_inputs_raise_valueerror_naming_range():
    with pytest.raises(ValueError, match=r'\[1, inf\]'): theorem1_epsilon(Gaussian(1.0), 0.1, order=0.5)
    with pytest.raises(ValueError, match=r'\[1, inf\]'): exact_renyi_sup(Gaussian(1.0), 0.1, 2, order=float('nan'))
    with pytest.raises(ValueError, match=r'\(1, inf\]'): theorem3_certified(torch.tensor([0.9, 0.1]), 0.1, order=1.0)
    with pytest.raises(ValueError, match=r'\(1, inf\]'): theorem3_radius(torch.tensor([0.9, 0.1]), Gaussian(1.), 2, orders=[1.0, 2.0])
    with pytest.raises(ValueError, match='sd must be > 0'): Gaussian(0.0)
    with pytest.raises(ValueError, match='sd must be > 0'): Laplace(-1.0)
    with pytest.raises(ValueError, match='valid choices'): exact_renyi_sup(Gaussian(1.0), 0.1, 'l7x')
    with pytest.raises(ValueError, match='valid choices'): theorem1_epsilon(Gaussian(1.0), 0.1, p=0.5)
    with pytest.raises(ValueError, match=r'\[0, 1\]'): theorem3_certified(torch.tensor([1.2, 0.1]), 0.1, 2.0)
    with pytest.raises(ValueError, match=r'\[0, 1\]'): theorem3_radius(torch.tensor([float('nan'), 0.1]), Gaussian(1.), 2)
    with pytest.raises(ValueError, match=r'\[0, inf\]'): exact_renyi_sup(Gaussian(1.0), -0.1, 2)
    with pytest.raises(ValueError, match=r'\[0, inf\]'): theorem1_epsilon(Laplace(1.0), -0.1, dim=3)
    with pytest.raises(ValueError, match=r'\[0, inf\]'): theorem3_certified(torch.tensor([0.9, 0.1]), -1.0, 2.0)
    with pytest.raises(ValueError, match='dim'): theorem1_epsilon(Laplace(1.0), 0.1)
    with pytest.raises(ValueError, match='dim'): exact_renyi_sup(Gaussian(1.0), 0.1, 'inf')
    with pytest.raises(NotImplementedError, match='1 < p < 2'): exact_renyi_sup(Laplace(1.0), 0.1, 1.5, dim=3)
    with pytest.raises(ValueError, match=r'\[0, 1\]'): guaranteed_accuracy(-0.1, 0.1, [0.2])
    with pytest.raises(ValueError, match='sum to 1'): risk(torch.tensor([[0.5, 0.6]]), torch.tensor([0]))


def test_old_norm_names_still_work_with_a_warning():
    "`p_norm=` (renamed `p`) and `.norm_p` (renamed `.p` / `.norm`) keep working for one release, with a DeprecationWarning."
    import torch.nn as nn
    from randsmooth_nb.bounds import exact_renyi_sup
    from randsmooth_nb.expfamily import Gaussian
    from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork
    from randsmooth_nb.attacks import EAD
    with pytest.warns(DeprecationWarning, match=r"p_norm=\.\.\.\) is deprecated: use p="):
        old = exact_renyi_sup(Gaussian(0.5), 0.3, p_norm=2)
    assert float(old) == float(exact_renyi_sup(Gaussian(0.5), 0.3, p=2))
    with pytest.raises(TypeError, match="both 'p_norm'"): exact_renyi_sup(Gaussian(0.5), 0.3, p_norm=2, p=2)
    net = RandomizedNetwork(nn.Linear(4, 3), NoiseInjection('laplace', 0.2))
    with pytest.warns(DeprecationWarning, match=r"use \.p"): assert net.norm_p == net.p == 1
    with pytest.warns(DeprecationWarning, match=r"use \.norm"): assert EAD(net).norm_p == 1 and EAD.norm == 'l1'
