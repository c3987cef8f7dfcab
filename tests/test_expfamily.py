"""Tests of randsmooth_nb.expfamily against independent answers (scipy.stats densities, numerical integration)."""
import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from hypothesis import given, settings, strategies as hs
from scipy import integrate

from randsmooth_nb.expfamily import (ExpFamilyNoise, Gaussian, DiagonalGaussian, Laplace, get_noise,
                                     figure_renyi_shift)

SET = settings(max_examples=25, deadline=None)
sds = hs.floats(0.05, 2.0)
shifts = hs.floats(-2.0, 2.0)
orders = hs.floats(1.02, 10.0)
INF = math.inf


def scipy_dist(noise):
    "The same 1-D law built independently with scipy.stats (sd -> scale)."
    if isinstance(noise, Gaussian): return st.norm(scale=noise.sd)
    return st.laplace(scale=noise.sd / math.sqrt(2))


def ref_logpdf(noise):
    """Independent 1-D log density: scipy's for the Gaussian; the textbook Laplace formula (scipy's Laplace logpdf
    is log(pdf), which underflows to -inf in the far tails that quadrature visits)."""
    if isinstance(noise, Gaussian): return st.norm(scale=noise.sd).logpdf
    b = noise.sd / math.sqrt(2)
    return lambda z: -np.abs(z) / b - math.log(2 * b)


def test_ref_logpdf_is_scipy():
    z = np.linspace(-3, 3, 101)
    for noise in [Gaussian(0.3), Laplace(0.3)]:
        np.testing.assert_allclose(ref_logpdf(noise)(z), scipy_dist(noise).logpdf(z), rtol=1e-12)


def quad_renyi(logpdf, delta, order, points=()):
    "D_order(P_delta || P) = 1/(order-1) log int p(z-delta)^order p(z)^(1-order) dz by quadrature."
    def logf(z):
        with np.errstate(invalid='ignore', over='ignore'):
            v = order * logpdf(z - delta) + (1 - order) * logpdf(z)
        return np.where(np.isnan(v), -np.inf, v)
    grid = np.linspace(-50, 50, 20001) * max(abs(delta), 1e-3) + np.linspace(-30, 30, 20001)
    c = np.max(logf(grid))
    cuts = sorted(set([-np.inf, *map(float, points), np.inf]))
    tot = sum(integrate.quad(lambda z: np.exp(logf(z) - c), lo, hi, limit=200, epsabs=0, epsrel=1e-11)[0]
              for lo, hi in zip(cuts[:-1], cuts[1:]))
    return (math.log(tot) + c) / (order - 1)


def quad_kl(logpdf, delta, points=()):
    "KL(P_delta || P) = int p(z-delta) (log p(z-delta) - log p(z)) dz by quadrature."
    f = lambda z: math.exp(logpdf(z - delta)) * (logpdf(z - delta) - logpdf(z)) if math.isfinite(logpdf(z - delta)) and logpdf(z - delta) > -700 else 0.
    cuts = sorted(set([-np.inf, *map(float, points), np.inf]))
    return sum(integrate.quad(f, lo, hi, limit=200)[0] for lo, hi in zip(cuts[:-1], cuts[1:]))


def kinks(noise, delta, order):
    return (0., delta) if isinstance(noise, Laplace) else (0., delta, order * delta)


# ---------------------------------------------------------------- exponential-family form and log densities
@SET
@given(sd=sds, kind=hs.sampled_from(['gaussian', 'laplace']), seed=hs.integers(0, 2**31 - 1),
       shape=hs.lists(hs.integers(1, 4), min_size=1, max_size=3))
def test_log_prob_matches_scipy(sd, kind, seed, shape):
    noise = get_noise(kind, sd)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3 * sd
    ref = scipy_dist(noise).logpdf(z.numpy()).sum(-1)
    np.testing.assert_allclose(noise.log_prob(z).numpy(), ref, rtol=1e-10, atol=1e-10)
    # per coordinate: <t(z), theta> - u(theta) + k(z) is the scipy log density
    per = (noise.sufficient_statistic(z) * noise.theta).sum(-1) - noise.log_partition(noise.theta) + noise.carrier(z)
    np.testing.assert_allclose(per.numpy(), scipy_dist(noise).logpdf(z.numpy()), rtol=1e-10, atol=1e-10)


@SET
@given(sd=sds, kind=hs.sampled_from(['gaussian', 'laplace']), mean=hs.floats(-1, 1))
def test_log_partition_is_log_normaliser(sd, kind, mean):
    noise = get_noise(kind, sd)
    th = noise.theta.clone()
    if kind == 'gaussian': th[0] = mean / sd**2        # natural parameter of a shifted Gaussian
    f = lambda z: math.exp(float((noise.sufficient_statistic(torch.tensor(z, dtype=torch.float64)) * th).sum()))
    pts = [0.0] if kind == 'laplace' else [mean]
    ref = math.log(sum(integrate.quad(f, lo, hi)[0] for lo, hi in [(-np.inf, pts[0]), (pts[0], np.inf)]))
    assert abs(noise.log_partition(th).item() - ref) < 1e-7


def test_natural_parameters_and_conventions():
    g, lp = Gaussian(0.5), Laplace(0.5)
    torch.testing.assert_close(g.theta, torch.tensor([0., -2.], dtype=torch.float64))
    assert lp.scale == pytest.approx(0.5 / math.sqrt(2))
    torch.testing.assert_close(lp.theta, torch.tensor([-1 / lp.scale], dtype=torch.float64))
    z = torch.randn(3, 5, dtype=torch.float64)
    assert g.sufficient_statistic(z).shape == (3, 5, 2) and lp.sufficient_statistic(z).shape == (3, 5, 1)
    assert (g.carrier(z) == 0).all() and (lp.carrier(z) == 0).all()
    assert g.variance_min == pytest.approx(0.25) and lp.variance_min == pytest.approx(0.25)
    assert DiagonalGaussian([0.2, 0.1, 3.]).variance_min == pytest.approx(0.01)
    assert g.name == 'gaussian' and lp.name == 'laplace' and isinstance(g, ExpFamilyNoise)


def test_diagonal_gaussian():
    sd = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    dg = DiagonalGaussian(sd)
    z = torch.randn(6, 3, dtype=torch.float64)
    np.testing.assert_allclose(dg.log_prob(z).numpy(), st.norm(scale=sd.numpy()).logpdf(z.numpy()).sum(-1), rtol=1e-10)
    d = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64)
    ref = sum(quad_renyi(st.norm(scale=float(s)).logpdf, float(x), 2.5, (0., float(x), 2.5 * float(x))) for s, x in zip(sd, d))
    assert dg.renyi_shift(d, 2.5).item() == pytest.approx(ref, rel=1e-6)
    assert dg.sample((4, 3), generator=torch.Generator().manual_seed(0)).shape == (4, 3)
    for bad in [lambda: dg.sample((4, 2)), lambda: dg.renyi_shift(torch.zeros(2), 2.), lambda: dg.log_prob(torch.zeros(5))]:
        with pytest.raises(ValueError, match='3 coordinates'): bad()
    with pytest.raises(ValueError, match='sd must be > 0'): DiagonalGaussian([0.1, -0.1])


# ---------------------------------------------------------------- Renyi divergence of shifts
@SET
@given(sd=sds, delta=shifts, order=orders, kind=hs.sampled_from(['gaussian', 'laplace']))
def test_renyi_shift_vs_quadrature(sd, delta, order, kind):
    noise = get_noise(kind, sd)
    ref = quad_renyi(ref_logpdf(noise), delta, order, kinks(noise, delta, order))
    got = noise.renyi_shift(delta, order).item()
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(sd=sds, delta=shifts, kind=hs.sampled_from(['gaussian', 'laplace']))
def test_kl_vs_quadrature(sd, delta, kind):
    noise = get_noise(kind, sd)
    ref = quad_kl(ref_logpdf(noise), delta, (0., delta))
    assert noise.renyi_shift(delta, 1).item() == pytest.approx(ref, rel=1e-6, abs=1e-9)


@SET
@given(sd=sds, delta=shifts)
def test_max_divergence_is_sup_log_ratio(sd, delta):
    lp = Laplace(sd)
    logpdf = ref_logpdf(lp)
    z = np.concatenate([np.linspace(-5, 5, 20001), [0., delta]])
    assert lp.renyi_shift(delta, INF).item() == pytest.approx(np.max(logpdf(z - delta) - logpdf(z)), rel=1e-9, abs=1e-12)
    g = Gaussian(sd)
    assert g.renyi_shift(delta, INF).item() == (INF if delta != 0 else 0.)


@SET
@given(sd=sds, kind=hs.sampled_from(['gaussian', 'laplace']),
       delta=hs.lists(shifts, min_size=1, max_size=5),
       o=hs.lists(hs.one_of(hs.floats(1, 50), hs.just(INF)), min_size=2, max_size=6))
def test_renyi_shift_monotone_in_order_and_additive(sd, kind, delta, o):
    noise = get_noise(kind, sd)
    d = torch.tensor(delta, dtype=torch.float64)
    o = sorted(o)
    v = [noise.renyi_shift(d, a).item() for a in o]
    assert all(b == INF or (a < INF and b >= a - 1e-9 * max(1, a)) for a, b in zip(v, v[1:])), (o, v)
    for a in o[:2]:    # a vector shift is the sum of its coordinates' divergences (independence)
        per = sum(noise.renyi_shift(x, a).item() for x in delta)
        assert noise.renyi_shift(d, a).item() == pytest.approx(per, rel=1e-12, abs=1e-15)
    assert noise.renyi_shift(torch.zeros_like(d), o[-1]).item() == 0.


@SET
@given(sd=sds, delta=shifts, order=orders)
def test_gaussian_closed_form(sd, delta, order):
    assert Gaussian(sd).renyi_shift([delta, -delta], order).item() == pytest.approx(order * delta**2 / sd**2, rel=1e-12)


@SET
@given(sd=sds, delta=hs.floats(-1e8, 1e8), order=hs.one_of(hs.floats(1, 1e12), hs.sampled_from([1, 1 + 1e-12, 1e300, INF])),
       kind=hs.sampled_from(['gaussian', 'laplace']))
def test_renyi_shift_never_nan(sd, delta, order, kind):
    v = get_noise(kind, sd).renyi_shift(torch.tensor([delta, INF if delta > 0 else 0.]), order)
    assert not torch.isnan(v).any() and v.item() >= 0


def test_laplace_limits_and_large_shifts():
    lp = Laplace(0.3)
    for d in [1e-6, 0.01, 0.5, 3.]:
        assert lp.renyi_shift(d, 1 + 1e-10).item() == pytest.approx(lp.renyi_shift(d, 1).item(), rel=1e-7, abs=1e-20)
        assert lp.renyi_shift(d, 1e13).item() == pytest.approx(lp.renyi_shift(d, INF).item(), rel=1e-9)
    t = 1e5 / lp.scale                   # exp((order-1) t) would overflow in the textbook formula
    assert lp.renyi_shift(1e5, 3.).item() == pytest.approx(t + math.log(3 / 5) / 2, rel=1e-12)
    assert lp.renyi_shift(1e-8, 1.).item() == pytest.approx((1e-8 / lp.scale)**2 / 2, rel=1e-6)


def test_kl_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    delta = torch.tensor([0.3, -0.1, 0.25], dtype=torch.float64)
    for noise in [Gaussian(0.4), Laplace(0.4)]:
        z = noise.sample((100_000, 3), generator=gen, dtype=torch.float64) + delta
        llr = scipy_dist(noise).logpdf((z - delta).numpy()).sum(-1) - scipy_dist(noise).logpdf(z.numpy()).sum(-1)
        assert abs(llr.mean() - noise.renyi_shift(delta, 1).item()) < 4 * llr.std() / math.sqrt(len(llr))


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize('kind,kurt', [('gaussian', 0.), ('laplace', 3.)])
def test_sample_moments(kind, kurt):
    noise = get_noise(kind, 0.3)
    x = noise.sample((300_000,), generator=torch.Generator().manual_seed(1), dtype=torch.float64).numpy()
    assert abs(x.mean()) < 3e-3 and abs(x.std() - 0.3) < 3e-3
    assert abs(st.kurtosis(x) - kurt) < 0.15
    # the whole law, not just moments
    assert st.kstest(x[:20000], scipy_dist(noise).cdf).pvalue > 1e-4


@pytest.mark.parametrize('kind', ['gaussian', 'laplace'])
def test_sample_reproducible_and_typed(kind):
    noise = get_noise(kind, 0.5)
    a = noise.sample((3, 4), generator=torch.Generator().manual_seed(7))
    b = noise.sample((3, 4), generator=torch.Generator().manual_seed(7), device='cpu')
    c = noise.sample((3, 4), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (3, 4)
    assert noise.sample(5, dtype=torch.float64).dtype == torch.float64
    assert noise.sample((2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float16).dtype == torch.float16
    with pytest.raises(ValueError, match='floating'): noise.sample((2,), dtype=torch.int64)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('order', [0.5, 0, -1, float('nan'), 'two', None])
def test_bad_order(order):
    for noise in [Gaussian(1.), Laplace(1.)]:
        with pytest.raises(ValueError, match=r'order must be in \[1, inf\]'): noise.renyi_shift(0.1, order)


@pytest.mark.parametrize('sd', [0, -0.1, float('nan'), float('inf'), None, 'x', [0.1, 0.2]])
def test_bad_sd(sd):
    for cls in [Gaussian, Laplace]:
        with pytest.raises(ValueError, match='sd must be > 0'): cls(sd)
    with pytest.raises(ValueError, match='sd must be > 0'): get_noise('laplace', sd)


def test_bad_name_and_delta():
    for name in ['uniform', 'gauss', '', 3]:
        with pytest.raises(ValueError, match='valid choices: gaussian, laplace'): get_noise(name, 0.1)
    lp = Laplace(1.)
    assert get_noise(lp) is lp
    assert type(get_noise(' Gaussian ', 0.1)) is Gaussian
    with pytest.raises(ValueError, match='delta'): Gaussian(1.).renyi_shift([0.1, float('nan')], 2.)
    with pytest.raises(ValueError, match='theta2'): Gaussian(1.).log_partition(torch.tensor([0., 0.5]))


def test_figure():
    import matplotlib; matplotlib.use('Agg')
    from matplotlib.figure import Figure
    import matplotlib.pyplot as plt
    fig = figure_renyi_shift(sd=0.5, n=50)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    plt.close(fig)
