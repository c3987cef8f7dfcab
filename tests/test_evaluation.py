"""Tests of randsmooth_nb.evaluation: label distributions of a noisy linear model against exact probabilities (Gaussian,
Laplace, uniform CDFs), Clopper-Pearson against scipy and its coverage, entropy estimators (scipy, simulated bias),
Theorem 2's curve (closed-form epsilon, monotone, below accuracy), per-image bookkeeping of the draws, errors."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats
from torch import nn

from randsmooth_nb.evaluation import (clopper_pearson, entropy_from_counts, entropy_term, guaranteed_accuracy_curve,
                                      predict_distribution)
from randsmooth_nb.models import TinyCNN
from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork

SET = settings(max_examples=30, deadline=None)


def linear_model(dist='gaussian', sd=0.5):
    "Logits (x, -x) of a scalar input plus noise: label 0 wins iff x + noise > 0, so P(0) = P(noise > -x) = F(x)."
    base = nn.Linear(1, 2, bias=False)
    with torch.no_grad(): base.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    return RandomizedNetwork(base, NoiseInjection(dist, sd)).eval()


def exact_p0(dist, sd, x):
    "P(label 0) from scipy's CDF of the (symmetric) noise: F(x)."
    law = {'gaussian': stats.norm(scale=sd), 'laplace': stats.laplace(scale=sd / math.sqrt(2)),
           'uniform': stats.uniform(loc=-sd * math.sqrt(3), scale=2 * sd * math.sqrt(3))}[dist]
    return law.cdf(np.asarray(x, dtype=np.float64))


# ---------------------------------------------------------------- label distributions

@pytest.mark.parametrize('dist', ['gaussian', 'laplace', 'uniform'])
def test_predict_distribution_exact_probabilities_and_coverage(dist):
    sd, n, B = 0.5, 400, 300
    x = torch.linspace(-2 * sd, 2 * sd, B)[:, None]
    torch.manual_seed(0)
    ld = predict_distribution(linear_model(dist, sd), x, n=n, fail_prob=0.05, batch_size=70)
    p = exact_p0(dist, sd, x[:, 0])
    assert ld.counts.shape == (B, 2) and (ld.counts.sum(1) == n).all() and ld.n == n
    torch.testing.assert_close(ld.probs, ld.counts.double() / n)
    err = (ld.probs[:, 0].numpy() - p) / np.sqrt(np.maximum(p * (1 - p), 1e-12) / n)
    assert np.abs(err[(p > 0) & (p < 1)]).max() < 4.5
    covered = (ld.lower[:, 0].numpy() <= p) & (p <= ld.upper[:, 0].numpy())
    assert covered.mean() >= 0.9, covered.mean()             # nominal 0.95; Clopper-Pearson is conservative
    assert (ld.lower <= ld.probs).all() and (ld.probs <= ld.upper).all()


@SET
@given(n=st.integers(1, 3000), frac=st.floats(0, 1), alpha=st.floats(1e-4, 0.5))
def test_clopper_pearson_matches_scipy(n, frac, alpha):
    k = int(round(frac * n))
    lo, hi = clopper_pearson(k, n, alpha)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method='exact')
    assert float(lo) == pytest.approx(ci.low, abs=1e-10) and float(hi) == pytest.approx(ci.high, abs=1e-10)
    one = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method='exact') if alpha < 0.5 else None
    lo1, hi1 = clopper_pearson(k, n, alpha, side='lower')
    lo2, hi2 = clopper_pearson(k, n, alpha, side='upper')
    assert float(hi1) == 1.0 and float(lo2) == 0.0
    if one is not None:
        assert float(lo1) == pytest.approx(one.low, abs=1e-10) and float(hi2) == pytest.approx(one.high, abs=1e-10)


def test_clopper_pearson_vectorised_and_edges():
    k = np.array([0, 1, 5, 10]); lo, hi = clopper_pearson(k, 10, 0.05)
    assert lo.shape == (4,) and lo[0] == 0 and hi[-1] == 1 and (lo < hi).all()
    assert hi[0] == pytest.approx(1 - 0.025 ** (1 / 10))           # closed form at k = 0
    assert lo[-1] == pytest.approx(0.025 ** (1 / 10))               # and at k = n


# ---------------------------------------------------------------- entropy

@SET
@given(counts=st.lists(st.lists(st.integers(0, 50), min_size=2, max_size=8).filter(lambda r: sum(r) > 0), min_size=1, max_size=4)
       .filter(lambda rows: len({len(r) for r in rows}) == 1))
def test_entropy_estimators_vs_scipy(counts):
    c = torch.tensor(counts)
    plug = entropy_from_counts(c)
    mm = entropy_from_counts(c, 'miller_madow')
    for i, row in enumerate(counts):
        assert float(plug[i]) == pytest.approx(stats.entropy(row), abs=1e-12)
        m, n = sum(v > 0 for v in row), sum(row)
        assert float(mm[i]) == pytest.approx(stats.entropy(row) + (m - 1) / (2 * n), abs=1e-12)
    assert plug.dtype == torch.float64 and (mm >= plug).all()


def test_miller_madow_reduces_the_bias():
    rng = np.random.default_rng(0)
    p = np.array([0.4, 0.2, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02])
    H = stats.entropy(p)
    c = torch.from_numpy(rng.multinomial(30, p, size=4000))
    b_plug = float(entropy_from_counts(c).mean()) - H
    b_mm = float(entropy_from_counts(c, 'miller_madow').mean()) - H
    assert b_plug < -0.05 and abs(b_mm) < abs(b_plug) / 3


def test_entropy_term(noisy_run, eval_xy):
    x = eval_xy[0][:30]
    torch.manual_seed(0)
    et = entropy_term(noisy_run.model, x, n=200)
    e = torch.exp(-entropy_from_counts(et['dist'].counts))
    assert et['mean_exp_neg_entropy'] == pytest.approx(float(e.mean()))
    assert et['se'] == pytest.approx(float(e.std() / math.sqrt(30)))
    assert ((et['entropy'] >= 0) & (et['entropy'] <= math.log(10) + 1e-12)).all()


# ---------------------------------------------------------------- Theorem 2's curve

def test_guaranteed_accuracy_curve_gaussian(noisy_run, eval_xy):
    x, y = eval_xy[0][:60], eval_xy[1][:60]
    model = noisy_run.model
    torch.manual_seed(0)
    c = guaranteed_accuracy_curve(model, (x, y), n=200)             # default alphas: 50 values up to 3 sd
    a, g = c['alphas'], c['guaranteed_accuracy']
    assert len(a) == 50 and a[0] == 0 and a[-1] == pytest.approx(0.75)
    assert (g[1:] <= g[:-1] + 1e-12).all() and (g <= c['accuracy'] + 1e-12).all() and (g >= 0).all()
    torch.testing.assert_close(c['epsilon'], a ** 2 / (2 * 0.25 ** 2))          # KL of shifted Gaussians, ||d||_2 = alpha
    m = float(torch.exp(-c['entropy']).mean())
    torch.testing.assert_close(c['risk_gap_bound'], 1 - torch.exp(-c['epsilon']) * m)
    assert 0.5 < c['accuracy'] <= 1 and c['p'] == 2 and c['noise'] == 'gaussian(sd=0.25)'
    assert float(g[0]) == pytest.approx(max(c['accuracy'] - (1 - m), 0))


def test_guaranteed_accuracy_curve_laplace_closed_form():
    torch.manual_seed(0)
    model = RandomizedNetwork(TinyCNN(num_classes=4, width=4), NoiseInjection('laplace', 0.4)).eval()
    x, y = torch.rand(20, 3, 8, 8) * 2 - 1, torch.randint(0, 4, (20,))
    alphas = torch.tensor([0.0, 0.05, 0.2, 0.5, 1.0], dtype=torch.float64)
    c = guaranteed_accuracy_curve(model, (x, y), alphas=alphas, n=100)
    t = alphas / (0.4 / math.sqrt(2))                                   # |delta|_1 / b
    torch.testing.assert_close(c['epsilon'], t + torch.exp(-t) - 1)     # KL of shifted Laplace laws (worst case: one coordinate)
    assert c['p'] == 1
    g = c['guaranteed_accuracy']
    assert (g[1:] <= g[:-1] + 1e-12).all() and (g <= c['accuracy'] + 1e-12).all()


# ---------------------------------------------------------------- each image keeps its own draws

def test_deterministic_model_counts_follow_their_image(det_run, eval_xy):
    x = eval_xy[0][:50]
    model = det_run.model
    with torch.no_grad(): top = model(x).argmax(1)
    ref = predict_distribution(model, x, n=7, batch_size=50).counts
    assert torch.equal(ref, 7 * torch.nn.functional.one_hot(top, 10))
    for bs, mb in ((1, None), (7, 13), (50, 3), (64, 1000)):
        assert torch.equal(predict_distribution(model, x, n=7, batch_size=bs, max_batch=mb).counts, ref)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(predict_distribution(model, x[perm], n=7, batch_size=16).counts, ref[perm])


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 1000), bs=st.integers(1, 12), mb=st.one_of(st.none(), st.integers(1, 40)))
def test_noisy_counts_follow_their_image(seed, bs, mb):
    "Inputs far on either side of the boundary, or on it: each row's counts must match its own input, wherever it sits."
    sd, n = 0.5, 200
    x0 = torch.tensor([-4.0, 0.0, 4.0, 4.0, 0.0, -4.0, 4.0, -4.0, 0.0, 4.0, -4.0, 0.0]) * sd
    perm = torch.randperm(len(x0), generator=torch.Generator().manual_seed(seed))
    xs = x0[perm][:, None]
    torch.manual_seed(seed)
    c = predict_distribution(linear_model('gaussian', sd), xs, n=n, batch_size=bs, max_batch=mb).counts[:, 0]
    side = torch.sign(xs[:, 0])
    assert (c[side > 0] >= n - 3).all() and (c[side < 0] <= 3).all()
    assert ((c[side == 0] - n / 2).abs() <= 5 * math.sqrt(n / 4)).all()


# ---------------------------------------------------------------- bad input

def test_errors():
    for a in (0, 1, -0.1, 1.5, float('nan')):
        with pytest.raises(ValueError, match=r'fail_prob must be in \(0, 1\)'): clopper_pearson(3, 10, a)
    with pytest.raises(ValueError, match='two-sided, lower, upper'): clopper_pearson(3, 10, 0.05, side='both')
    with pytest.raises(ValueError, match='plugin, miller_madow'): entropy_from_counts(torch.tensor([[1, 2]]), 'jackknife')
    m = linear_model()
    x = torch.zeros(3, 1)
    for n in (0, -1, 2.5):
        with pytest.raises(ValueError, match='n must'): predict_distribution(m, x, n=n)
    with pytest.raises(ValueError, match='fail_prob'): predict_distribution(m, x, n=10, fail_prob=1.5)
    with pytest.raises(ValueError, match='alphas'):
        guaranteed_accuracy_curve(m, (x, torch.zeros(3, dtype=torch.long)), alphas=[-0.1, 0.2], n=10)
    with pytest.raises(ValueError, match='noise'):
        guaranteed_accuracy_curve(RandomizedNetwork(nn.Linear(1, 2)), (x, torch.zeros(3, dtype=torch.long)), n=10)
