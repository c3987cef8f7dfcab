"""Tests of randsmooth_nb.certify: radii against scipy / root finding, abstention on a coin flip and its error rate,
every certificate (Cohen, PixelDP, Theorem 3) below the true robustness radius of linear models (Gaussian/l2 and
Laplace/l1 noise, at the input and after a normalized first layer), certified accuracy, and input checks."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import optimize, stats
from torch import nn

from randsmooth_nb.certify import CERTIFICATES, Smooth, certified_accuracy, certify_all, cohen_radius, pixeldp_radius
from randsmooth_nb.expfamily import Gaussian, Laplace
from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork

SET = settings(max_examples=30, deadline=None)


def two_class_linear(w, b=0.0, dist='gaussian', sd=0.5, at='input', bound=1.0):
    "Logits (u, -u) with u = w.x + b: label 0 iff u > 0. With at='first_layer' the noise is added to u itself."
    w = torch.as_tensor(w, dtype=torch.float32)
    first, second = nn.Linear(len(w), 1), nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        first.weight.copy_(w[None]); first.bias.fill_(b); second.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    return RandomizedNetwork(nn.Sequential(first, second), NoiseInjection(dist, sd), at=at, first_layer_bound=bound).eval()


# ---------------------------------------------------------------- radii

@SET
@given(p=st.floats(1e-6, 1 - 1e-9), sd=st.floats(0.01, 3.0))
def test_cohen_radius_vs_scipy(p, sd):
    rg = float(cohen_radius(torch.tensor([p], dtype=torch.float64), Gaussian(sd))[0])
    rl = float(cohen_radius(torch.tensor([p], dtype=torch.float64), Laplace(sd))[0])
    if p <= 0.5: assert rg == 0 and rl == 0
    else:
        assert rg == pytest.approx(stats.norm(scale=sd).ppf(p), rel=1e-9, abs=1e-12)
        assert rl == pytest.approx(stats.laplace(scale=sd / math.sqrt(2)).ppf(p), rel=1e-9, abs=1e-12)


def pixeldp_reference(pa, pb, sd, deltas=(1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5, 1e-6)):
    "Largest L with pa > e^{2 eps} pb + (1 + e^eps) delta, eps = L sqrt(2 ln(1.25/delta)) / sd <= 1, by root finding."
    best = 0.0
    for d in deltas:
        h = lambda e: pa - math.exp(2 * e) * pb - (1 + math.exp(e)) * d
        if h(0) <= 0: continue
        eps = 1.0 if h(1.0) > 0 else optimize.brentq(h, 0, 1.0, xtol=1e-12)
        best = max(best, sd * eps / math.sqrt(2 * math.log(1.25 / d)))
    return best


@SET
@given(pa=st.floats(0.3, 1.0), sd=st.floats(0.05, 2.0))
def test_pixeldp_radius_vs_root_finding(pa, sd):
    pb = 1 - pa
    r = float(pixeldp_radius(torch.tensor([pa], dtype=torch.float64), torch.tensor([pb], dtype=torch.float64), Gaussian(sd))[0])
    ref = pixeldp_reference(pa, pb, sd)
    assert r <= ref + 1e-12                                          # a grid search never overshoots
    assert r >= ref - sd * 1e-3                                      # and misses by less than a grid step
    rl = float(pixeldp_radius(torch.tensor([pa], dtype=torch.float64), torch.tensor([pb], dtype=torch.float64), Laplace(sd))[0])
    assert rl == pytest.approx(max(0.0, sd / math.sqrt(2) * 0.5 * math.log(pa / pb)) if pb > 0 else rl, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- Smooth

def test_smooth_predict_and_certify():
    torch.manual_seed(0)
    model = two_class_linear([1.0], sd=0.5)
    s = Smooth(model)
    assert s.predict(torch.tensor([0.0]), n=1000, fail_prob=0.001) == Smooth.ABSTAIN        # a fair coin
    assert s.certify(torch.tensor([0.0]), n0=100, n=1000, fail_prob=0.001) == (Smooth.ABSTAIN, 0.0)
    assert s.predict(torch.tensor([1.0]), n=1000, fail_prob=0.001) == 0
    assert s.predict(torch.tensor([-1.0]), n=1000, fail_prob=0.001) == 1
    lab, r = s.certify(torch.tensor([1.0]), n0=100, n=1000, fail_prob=0.001)
    assert lab == 0 and 0.5 < r <= 1.0                                # true radius: the distance 1 to the boundary


def test_smooth_predict_error_rate_on_a_tie():
    "At a tie every non-abstention is a mistake; the two-sided test keeps them below alpha."
    torch.manual_seed(1)
    s = Smooth(two_class_linear([1.0], sd=0.5))
    pred = s.predict_batch(torch.zeros(400, 1), n=100, fail_prob=0.1)
    assert (pred != Smooth.ABSTAIN).double().mean() <= 0.1 + 3 * math.sqrt(0.09 / 400)
    assert (pred == Smooth.ABSTAIN).any()


# ---------------------------------------------------------------- certificates vs the truth

CASES = [('gaussian', 'input', 1.0), ('gaussian', 'first_layer', 0.5), ('gaussian', 'first_layer', 3.0),
         ('laplace', 'input', 1.0), ('laplace', 'first_layer', 0.5)]


@pytest.mark.parametrize('dist,at,bound', CASES)
def test_certificates_below_true_radius(dist, at, bound):
    """For u = w.x + b the smoothed classifier is sign(u) (symmetric noise), whose exact radius is |u| / ||w||_2 (l2, Gaussian)
    or |u| / ||w||_inf (l1, Laplace), with w the weight actually used (normalized when at='first_layer')."""
    g = torch.Generator().manual_seed(0)
    d, B, sd = 5, 60, 0.2
    w = torch.randn(d, generator=g)
    model = two_class_linear(w, 0.1, dist, sd, at, bound)
    weff, beff = model.base[0].weight.detach()[0].double(), 0.1
    x = torch.randn(B, d, generator=g) * 0.6 / w.norm()
    u = x.double() @ weff + beff
    y = (u <= 0).long()
    dual = weff.norm() if dist == 'gaussian' else weff.abs().max()
    true = u.abs() / dual
    torch.manual_seed(0)
    cert = certify_all(model, x, y, n0=100, n=2000, fail_prob=0.001)
    assert cert['p'] == (2 if dist == 'gaussian' else 1) and set(cert['radii']) == set(CERTIFICATES)
    for name, r in cert['radii'].items():
        pos = r > 0
        assert pos.sum() >= B // 3, name                            # not vacuous
        assert (cert['pred'][pos] == y[pos]).all(), name
        assert (r[pos] <= true[pos] * (1 + 1e-9)).all(), (name, (r - true).max())
    # Cohen's radius is nearly exact when the noise seen by u is the worst case (Gaussian, or 1-D Laplace after the
    # first layer) and the layer sits at its bound; with 5-D Laplace noise at the input it is about half the truth
    tight = cert['radii']['cohen'] / true
    mid = (u.abs() / (sd * dual) > 0.5) & (u.abs() / (sd * dual) < 2.0)
    if at == 'input' or bound < 1: assert tight[mid].min() > (0.6 if dist == 'gaussian' or at == 'first_layer' else 0.35)


def test_certify_all_agrees_with_smooth(noisy_run, eval_xy):
    x, y = eval_xy[0][:20], eval_xy[1][:20]
    torch.manual_seed(0)
    cert = certify_all(noisy_run.model, x, y, n0=50, n=400, fail_prob=0.01)
    torch.manual_seed(0)
    lab, r = Smooth(noisy_run.model).certify_batch(x, n0=50, n=400, fail_prob=0.01)
    torch.testing.assert_close(r, cert['radii']['cohen'])
    assert torch.equal(lab[r > 0], cert['pred'][r > 0])
    assert torch.equal(cert['correct'], cert['pred'] == y)


@SET
@given(radii=st.lists(st.floats(0, 3), min_size=1, max_size=20), seed=st.integers(0, 100))
def test_certified_accuracy_non_increasing(radii, seed):
    g = torch.Generator().manual_seed(seed)
    B = len(radii)
    rad = torch.tensor(radii, dtype=torch.float64)
    cert = {'correct': torch.rand(B, generator=g) < 0.7, 'radii': {'cohen': rad, 'pixeldp': rad / 2}}
    rs = torch.linspace(0, 3.5, 15, dtype=torch.float64)
    acc = certified_accuracy(cert, rs)
    for k, v in acc.items():
        assert (v[1:] <= v[:-1]).all()
        brute = [np.mean([bool(c) and rr > 0 and rr >= r for c, rr in zip(cert['correct'].tolist(), cert['radii'][k].tolist())])
                 for r in rs.tolist()]
        np.testing.assert_allclose(v.numpy(), brute)


# ---------------------------------------------------------------- bad input

def test_errors():
    uni = SimpleNamespace(name='uniform', sd=0.3)
    with pytest.raises(ValueError, match='gaussian, laplace'): cohen_radius(torch.tensor([0.9]), uni)
    with pytest.raises(ValueError, match='gaussian, laplace'): pixeldp_radius(torch.tensor([0.9]), torch.tensor([0.1]), uni)
    with pytest.raises(ValueError, match='RandomizedNetwork'): Smooth(nn.Linear(2, 2))
    for m in (two_class_linear([1.0], sd=0.0), two_class_linear([1.0], dist='uniform')):
        with pytest.raises(ValueError, match='sd = 0 or uniform'): Smooth(m)
        with pytest.raises(ValueError, match='sd = 0 or uniform'): certify_all(m, torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    s = Smooth(two_class_linear([1.0]))
    with pytest.raises(ValueError, match='fail_prob'): s.certify(torch.tensor([1.0]), 10, 100, fail_prob=1.5)


class _ForwardGuard:
    "Makes any forward pass of the model raise, to check that input validation comes first."
    def __init__(self, model): self.model = model
    def __enter__(self):
        def boom(*a): raise RuntimeError('forward was called')
        self.h = self.model.base.register_forward_pre_hook(boom); return self.model
    def __exit__(self, *a): self.h.remove()


@pytest.mark.parametrize('alpha', [0.0, 1.5, -0.1])
def test_smooth_predict_validates_alpha(alpha):
    "BUG: Smooth.predict/predict_batch accept any alpha: 1.5 never abstains (even on a tie), 0 always abstains."
    s = Smooth(two_class_linear([1.0]))
    with pytest.raises(ValueError, match='fail_prob'): s.predict(torch.tensor([0.0]), n=100, fail_prob=alpha)


@pytest.mark.parametrize('kw', [dict(fail_prob=1.5), dict(fail_prob=0.0), dict(n=0), dict(n0=0), dict(n=-5)])
def test_certify_all_validates_before_sampling(kw):
    "BUG: certify_all checks alpha only after drawing all samples, and n/n0 < 1 end in an AttributeError."
    model = two_class_linear([1.0])
    args = {'n0': 10, 'n': 100, 'fail_prob': 0.01, **kw}
    with _ForwardGuard(model), pytest.raises(ValueError):
        certify_all(model, torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), **args)
    s = Smooth(model)
    if 'fail_prob' not in kw:
        with pytest.raises(ValueError): s.certify_batch(torch.zeros(3, 1), args['n0'], args['n'], args['fail_prob'])


def test_old_alpha_keyword_still_works_with_a_deprecation_warning():
    "`alpha` was the confidence argument's name; it now means only the paper's perturbation budget (fail_prob replaces it)."
    torch.manual_seed(0); s = Smooth(two_class_linear([1.0], sd=0.5))
    with pytest.warns(DeprecationWarning, match='use fail_prob='):
        assert s.predict(torch.tensor([1.0]), n=1000, alpha=0.001) == s.predict(torch.tensor([1.0]), n=1000, fail_prob=0.001) == 0
    from randsmooth_nb.evaluation import clopper_pearson
    with pytest.warns(DeprecationWarning, match='use fail_prob='): lo, hi = clopper_pearson(3, 10, alpha=0.1)
    np.testing.assert_allclose((lo, hi), clopper_pearson(3, 10, fail_prob=0.1))
