"""Tests of randsmooth_nb.noise: moments and laws of the noise (vs scipy), fresh draws in eval mode, device/dtype,
generators, forward_samples vs separate passes, the first-layer norm constraint (vs the dense convolution matrix),
sensitivity values, label_counts and error messages."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from scipy import stats
from torch import nn

from randsmooth_nb.models import TinyCNN
from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork, label_counts, sample_logits
from randsmooth_nb.sensitivity import conv_norm_bound

SET = settings(max_examples=12, deadline=None, derandomize=True)   # statistical checks: fixed examples, no flakes
DISTS = ('gaussian', 'laplace', 'uniform')
EXCESS_KURTOSIS = {'gaussian': 0.0, 'laplace': 3.0, 'uniform': -1.2}


def scipy_law(dist, sd):
    "The same law built independently with scipy."
    if dist == 'gaussian': return stats.norm(scale=sd)
    if dist == 'laplace': return stats.laplace(scale=sd / math.sqrt(2))
    return stats.uniform(loc=-sd * math.sqrt(3), scale=2 * sd * math.sqrt(3))


def tiny_base(seed=0, num_classes=5):
    torch.manual_seed(seed)
    return TinyCNN(num_classes=num_classes, width=4).eval()


def dense_conv_matrix(weight, hw, padding):
    "The matrix of x -> conv2d(x, weight) on (C, H, W) inputs, built by applying it to the standard basis."
    c, (h, w) = weight.shape[1], hw
    basis = torch.eye(c * h * w, dtype=torch.float64).reshape(-1, c, h, w)
    return F.conv2d(basis, weight.double(), padding=padding).flatten(1).T      # (out, in)


# ---------------------------------------------------------------- the noise itself

@SET
@given(dist=st.sampled_from(DISTS), sd=st.floats(0.01, 3.0), seed=st.integers(0, 2**31))
def test_noise_moments_and_law(dist, sd, seed):
    n = 200_000
    g = torch.Generator().manual_seed(seed)
    z = NoiseInjection(dist, sd)(torch.zeros(n, dtype=torch.float64), generator=g).numpy()
    assert abs(z.mean()) < 5 * sd / math.sqrt(n)
    assert z.std() == pytest.approx(sd, rel=0.015)
    assert stats.kurtosis(z) == pytest.approx(EXCESS_KURTOSIS[dist], abs=0.1 if dist != 'laplace' else 0.6)
    assert stats.kstest(z[:20_000], scipy_law(dist, sd).cdf).pvalue > 1e-4


def test_kurtosis_separates_the_three_laws():
    g = torch.Generator().manual_seed(0)
    k = {d: stats.kurtosis(NoiseInjection(d, 0.5)(torch.zeros(400_000), generator=g).double().numpy()) for d in DISTS}
    assert abs(k['gaussian']) < 0.05 and abs(k['laplace'] - 3) < 0.3 and abs(k['uniform'] + 1.2) < 0.02


@pytest.mark.parametrize('dist', DISTS)
def test_fresh_draws_in_eval_mode(dist):
    ni = NoiseInjection(dist, 0.2).eval()
    x = torch.zeros(4, 3, 8, 8)
    a, b = ni(x), ni(x)
    assert not torch.equal(a, x) and not torch.equal(a, b)
    rn = RandomizedNetwork(tiny_base(), NoiseInjection(dist, 0.2)).eval()
    assert not rn.training and not rn.noise.training
    assert not torch.equal(rn(x), rn(x))
    rf = RandomizedNetwork(tiny_base(), NoiseInjection(dist, 0.2), at='first_layer', input_hw=(8, 8)).eval()
    assert not torch.equal(rf(x), rf(x))


@pytest.mark.parametrize('dist', DISTS)
def test_sd_zero_is_exactly_the_base_network(dist):
    base = tiny_base()
    ref = copy.deepcopy(base)
    x = torch.rand(5, 3, 8, 8) * 2 - 1
    for noise in (NoiseInjection(dist, 0.0), None):
        rn = RandomizedNetwork(base, noise).eval()
        assert torch.equal(rn(x), ref(x))
        assert torch.equal(rn.forward_samples(x, 3), ref(x).expand(3, -1, -1))


@pytest.mark.parametrize('dist', DISTS)
def test_noise_follows_device_and_dtype(dist):
    ni = NoiseInjection(dist, 0.3)
    x64 = torch.zeros(2000, dtype=torch.float64)
    z = ni(x64)
    assert z.dtype == torch.float64
    assert (z.float().double() != z).any()                 # genuinely float64 draws, not upcast float32
    assert ni(torch.zeros(3, dtype=torch.float16)).dtype == torch.float16
    m = ni(torch.zeros(2, 3, device='meta', dtype=torch.float64))   # the device follows the input
    assert m.device.type == 'meta' and m.dtype == torch.float64
    rn = RandomizedNetwork(tiny_base().double(), NoiseInjection(dist, 0.3))
    assert rn(torch.zeros(2, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize('dist', DISTS)
def test_generator_reproducible_and_leaves_global_rng_alone(dist):
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    for at in ('input', 'first_layer'):
        rn = RandomizedNetwork(tiny_base(), NoiseInjection(dist, 0.3), at=at, input_hw=(8, 8)).eval()
        state = torch.get_rng_state()
        a = rn(x, generator=torch.Generator().manual_seed(7))
        b = rn(x, generator=torch.Generator().manual_seed(7))
        c = rn(x, generator=torch.Generator().manual_seed(8))
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(a, b) and not torch.equal(a, c)
    # the layer's own generator is the default source
    ni = NoiseInjection(dist, 0.3, generator=torch.Generator().manual_seed(3))
    a = ni(torch.zeros(10))
    ni.generator.manual_seed(3)
    assert torch.equal(a, ni(torch.zeros(10)))
    # and the global RNG is used when there is no generator
    torch.manual_seed(11); a = NoiseInjection(dist, 0.3)(torch.zeros(10))
    torch.manual_seed(11); assert torch.equal(a, NoiseInjection(dist, 0.3)(torch.zeros(10)))


# ---------------------------------------------------------------- batched draws

@settings(max_examples=20, deadline=None)
@given(dist=st.sampled_from(DISTS), at=st.sampled_from(['input', 'first_layer']), n=st.integers(1, 9),
       chunk=st.one_of(st.none(), st.integers(1, 10)), B=st.integers(1, 3), seed=st.integers(0, 1000))
def test_forward_samples_equals_separate_passes(dist, at, n, chunk, B, seed):
    rn = RandomizedNetwork(tiny_base(), NoiseInjection(dist, 0.3), at=at, input_hw=(8, 8)).eval()
    x = torch.rand(B, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.no_grad():
        z = rn.forward_samples(x, n, chunk=chunk, generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        ref = torch.stack([rn(x, generator=g) for _ in range(n)])
    assert z.shape == (n, B, 5)
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)
    assert n == 1 or not torch.allclose(z[0], z[-1])     # the draws differ


def test_forward_samples_chunks_not_dividing_n():
    rn = RandomizedNetwork(tiny_base(), NoiseInjection('laplace', 0.3)).eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        outs = [rn.forward_samples(x, 10, chunk=c, generator=torch.Generator().manual_seed(1)) for c in (1, 3, 4, 7, 10, 64)]
    for o in outs[1:]: torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-5)


def test_forward_samples_on_a_linear_first_layer():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    rn = RandomizedNetwork(base, NoiseInjection('gaussian', 0.5), at='first_layer')
    x = torch.randn(5, 6)
    with torch.no_grad():
        z = rn.forward_samples(x, 7, chunk=3, generator=torch.Generator().manual_seed(2))
        g = torch.Generator().manual_seed(2)
        ref = torch.stack([rn(x, generator=g) for _ in range(7)])
        # manual reimplementation: noise of the first layer's output shape, drawn per pass
        g = torch.Generator().manual_seed(2)
        w = base[0].weight
        man = torch.stack([base[2](torch.tanh(F.linear(x, w, base[0].bias) + 0.5 * torch.randn(5, 4, generator=g)))
                           for _ in range(7)])
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z, man, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- noise after the first layer

@pytest.mark.parametrize('dist,p', [('gaussian', 2), ('uniform', 2), ('laplace', 1)])
def test_first_layer_norm_stays_bounded_under_training(dist, p):
    bound, hw = 0.5, (8, 8)
    rn = RandomizedNetwork(tiny_base(), NoiseInjection(dist, 0.1), at='first_layer', first_layer_bound=bound, input_hw=hw)
    assert rn.p == p
    layer = rn.base.features[0]
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.rand(8, 3, 8, 8) * 2 - 1
    for _ in range(20):      # try hard to grow the first layer: maximise its weights and its output
        opt.zero_grad()
        h = F.conv2d(x, layer.weight, padding=1)
        (-(layer.weight ** 2).sum() - h.pow(2).mean()).backward()
        opt.step()
        assert float(conv_norm_bound(layer.weight.detach(), p, hw)) <= bound * (1 + 1e-5)
    with torch.no_grad():
        raw = layer.parametrizations.weight.original
        raw.mul_(10)                                        # and push the raw weight far outside
        w = layer.weight
        assert float(conv_norm_bound(raw, p, hw)) > bound
        assert float(conv_norm_bound(w, p, hw)) <= bound * (1 + 1e-5)
        assert float(conv_norm_bound(w, p, hw)) == pytest.approx(bound, rel=1e-5)     # rescaled onto the bound
        A = dense_conv_matrix(w, hw, padding=1)              # independent check: the true operator norm
        true = torch.linalg.matrix_norm(A, ord=2) if p == 2 else A.abs().sum(0).max()
        assert float(true) <= bound * (1 + 1e-5)


def test_first_layer_noise_is_added_to_the_first_layer_output():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Identity())
    rn = RandomizedNetwork(base, NoiseInjection('gaussian', 0.7), at='first_layer', first_layer_bound=100.0)
    x = torch.randn(6, 4)
    with torch.no_grad():
        out = rn(x, generator=torch.Generator().manual_seed(4))
        noise = 0.7 * torch.randn(6, 3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, x @ base[0].weight.T + noise)


def test_sensitivity_values():
    d = 3 * 8 * 8
    g = RandomizedNetwork(tiny_base(), NoiseInjection('gaussian', 0.25))
    lap = RandomizedNetwork(tiny_base(), NoiseInjection('laplace', 0.25))
    assert (g.p, lap.p) == (2, 1)
    assert g.sensitivity(0.3, 2) == pytest.approx(0.3)
    assert g.sensitivity(0.3, 'inf', dim=d) == pytest.approx(0.3 * math.sqrt(d))
    assert g.sensitivity(0.3, 1, dim=d) == pytest.approx(0.3)             # ||z||_2 <= ||z||_1
    assert lap.sensitivity(0.3, 1) == pytest.approx(0.3)                   # Laplace: l1 is the natural norm
    assert lap.sensitivity(0.3, 2, dim=d) == pytest.approx(0.3 * math.sqrt(d))
    assert lap.sensitivity(0.3, 'inf', dim=d) == pytest.approx(0.3 * d)
    gf = RandomizedNetwork(tiny_base(), NoiseInjection('gaussian', 0.25), at='first_layer', first_layer_bound=0.4, input_hw=(8, 8))
    lf = RandomizedNetwork(tiny_base(), NoiseInjection('laplace', 0.25), at='first_layer', first_layer_bound=0.4, input_hw=(8, 8))
    assert gf.sensitivity(0.3, 2) == pytest.approx(0.12)
    assert lf.sensitivity(0.3, 1) == pytest.approx(0.12) and lf.p == 1
    assert g.sensitivity(0.0, 2) == 0
    with pytest.raises(ValueError, match='dim'): g.sensitivity(0.3, 'inf')
    with pytest.raises(ValueError, match='alpha'): g.sensitivity(-0.1, 2)


@settings(max_examples=15, deadline=None)
@given(dist=st.sampled_from(DISTS), n=st.integers(1, 60), B=st.integers(1, 4), max_batch=st.one_of(st.none(), st.integers(1, 30)))
def test_label_counts_sum_to_n(dist, n, B, max_batch):
    rn = RandomizedNetwork(tiny_base(), NoiseInjection(dist, 2.0)).eval()
    x = torch.rand(B, 3, 8, 8) * 2 - 1
    c = label_counts(rn, x, n, max_batch=max_batch)
    assert c.shape == (B, 5) and not c.is_floating_point()
    assert torch.equal(c.sum(1), torch.full((B,), n))
    assert (c >= 0).all()


def test_label_counts_of_a_deterministic_model_and_of_a_plain_module():
    base = tiny_base()
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    top = base(x).argmax(1)
    for model in (RandomizedNetwork(base).eval(), base):
        c = label_counts(model, x, 13, max_batch=6)
        assert torch.equal(c, 13 * F.one_hot(top, 5))
    assert sample_logits(base, x, 3).shape == (3, 4, 5)


# ---------------------------------------------------------------- bad input

def test_errors():
    with pytest.raises(ValueError, match='gaussian, laplace, uniform'): NoiseInjection('cauchy', 0.1)
    with pytest.raises(ValueError, match='sd'): NoiseInjection('gaussian', -0.1)
    with pytest.raises(ValueError, match='sd'): NoiseInjection('laplace', float('nan'))
    with pytest.raises(ValueError, match='sd'): NoiseInjection('uniform', float('inf'))
    with pytest.raises(ValueError, match='input, first_layer'): RandomizedNetwork(tiny_base(), NoiseInjection('gaussian', 0.1), at='middle')
    with pytest.raises(ValueError, match='first_layer_bound'): RandomizedNetwork(tiny_base(), at='first_layer', first_layer_bound=0)
    with pytest.raises(ValueError, match='nn.Conv2d or nn.Linear'): RandomizedNetwork(nn.Sequential(nn.Tanh()), at='first_layer')
    rn = RandomizedNetwork(tiny_base(), NoiseInjection('gaussian', 0.1))
    x = torch.zeros(2, 3, 8, 8)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match='n must'): rn.forward_samples(x, bad)
    for bad in (0, 2.0):
        with pytest.raises(ValueError, match='chunk'): rn.forward_samples(x, 4, chunk=bad)
    with pytest.raises(ValueError, match='multiple of draws'): rn.noise(torch.zeros(3, 2), draws=2)


def test_label_counts_rejects_n_below_one():
    "BUG: label_counts(n=0) returns None (callers then fail with AttributeError) instead of raising ValueError."
    rn = RandomizedNetwork(tiny_base(), NoiseInjection('gaussian', 0.1)).eval()
    for bad in (0, -3):
        with pytest.raises(ValueError, match='n must'): label_counts(rn, torch.zeros(2, 3, 8, 8), bad)


# ---------------------------------------------------------------- rows per pass sized by GPU memory

from unittest import mock

import randsmooth_nb.noise as noise
from randsmooth_nb.noise import DEFAULT_MAX_BATCH, default_max_batch, fit_max_batch, rows_per_pass, rows_that_fit

MiB, GiB = 2**20, 2**30


@settings(max_examples=200, deadline=None)
@given(free=st.integers(0, 200 * GiB), per_row=st.floats(1.0, 4.0 * GiB), fraction=st.floats(0.01, 1.0),
       floor=st.sampled_from([1, 128, 512]), cap=st.one_of(st.none(), st.sampled_from([512, 1000, 8192])))
def test_rows_that_fit_is_the_largest_power_of_two_that_fits(free, per_row, fraction, floor, cap):
    r = rows_that_fit(free, per_row, fraction, floor, cap)
    budget, tol = fraction * free, 1e-12
    assert floor <= r and (cap is None or r <= cap)
    if r == floor: assert cap == floor or 2 * floor * per_row > budget * (1 - tol)   # else twice the floor would be taken
    elif r == cap: assert cap * per_row <= budget * (1 + tol)             # the cap is reached only when it fits
    else:
        assert r & (r - 1) == 0                                            # a power of two ...
        assert r * per_row <= budget * (1 + tol) < 2 * r * per_row * (1 + tol)   # ... the largest that fits


def test_rows_that_fit_examples_and_errors():
    assert rows_that_fit(40 * GiB, 10 * MiB, 0.5, 512, 8192) == 2048
    assert rows_that_fit(40 * GiB, 1 * MiB, 0.5, 512, 8192) == 8192
    assert rows_that_fit(1 * GiB, 10 * MiB, 0.5, 512, 8192) == 512
    assert rows_that_fit(3 * 2**20, 1.0, 1.0) == 2**21
    for kw, msg in [(dict(bytes_per_row=0), 'bytes_per_row'), (dict(bytes_per_row=float('nan')), 'bytes_per_row'),
                    (dict(free_bytes=-1), 'free_bytes'), (dict(fraction=0), 'fraction'), (dict(fraction=1.01), 'fraction'),
                    (dict(floor=0), 'floor'), (dict(floor=64, cap=32), 'floor <= cap')]:
        with pytest.raises(ValueError, match=msg): rows_that_fit(**{**dict(free_bytes=GiB, bytes_per_row=MiB), **kw})


class Exploding(nn.Module):
    def forward(self, x, **kw): raise AssertionError('a CPU must not run a probe')


def test_cpu_and_mps_rows_are_the_fixed_defaults():
    x = torch.zeros(3, 3, 8, 8)
    assert fit_max_batch(Exploding(), x) == DEFAULT_MAX_BATCH['cpu'] == 128
    assert fit_max_batch(Exploding(), x, device='mps') == 512
    rn = RandomizedNetwork(tiny_base(), NoiseInjection('gaussian', 0.5)).eval()
    assert rn.fit_rows and rows_per_pass(rn, x) == rows_per_pass(rn, x, grad=True) == default_max_batch('cpu')
    assert rows_per_pass(RandomizedNetwork(tiny_base(), max_batch=40), x) == 40
    assert rows_per_pass(tiny_base(), x) == 128
    assert '_fitted_rows' not in rn.__dict__                       # nothing measured, nothing remembered


def test_cpu_draws_are_unchanged():
    "With max_batch=None the CPU chunks are the old ones (128 rows): same draws as the explicit chunk, bit for bit."
    rn = RandomizedNetwork(tiny_base(), NoiseInjection('laplace', 0.5)).eval()
    x = torch.rand(7, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        a = rn.forward_samples(x, 100, generator=torch.Generator().manual_seed(0))
        b = rn.forward_samples(x, 100, chunk=128 // 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    g = lambda: torch.Generator().manual_seed(1)
    assert torch.equal(label_counts(rn, x, 300, generator=g()), label_counts(rn, x, 300, max_batch=128, generator=g()))


def fake_cuda(free, per_row, rows=512, base=100 * MiB, cached=0):
    "torch.cuda's memory functions as a GPU with `free` bytes would answer, each of the probe's `rows` rows costing `per_row` bytes."
    calls = []
    return calls, mock.patch.multiple(
        torch.cuda, synchronize=lambda d=None: calls.append('sync'), reset_peak_memory_stats=lambda d=None: calls.append('reset'),
        memory_allocated=lambda d=None: base, max_memory_allocated=lambda d=None: base + rows * per_row,
        memory_reserved=lambda d=None: base + cached, mem_get_info=lambda d=None: (free, 141 * GiB))


@pytest.mark.parametrize('free,per_row,cached,kw,expect', [
    (120 * GiB, 4 * MiB, 0, {}, 8192),                               # 15360 rows fit: the cap
    (120 * GiB, 40 * MiB, 0, {}, 1024),                              # 1536 fit
    (120 * GiB, 40 * MiB, 0, dict(fraction=0.9), 2048),              # 2764 fit
    (16 * GiB, 40 * MiB, 4 * GiB, {}, 512),                          # 256 fit (cache counted as free): the floor
    (120 * GiB, 4 * MiB, 0, dict(cap=2048), 2048),
    (120 * GiB, 4 * MiB, 0, dict(cap=100), 512),                     # a cap below the floor: the floor
])
def test_fit_max_batch_arithmetic_with_a_fake_gpu(free, per_row, cached, kw, expect):
    rn = RandomizedNetwork(tiny_base(), NoiseInjection('gaussian', 0.5)).eval()
    calls, fake = fake_cuda(free, per_row, cached=cached)
    with fake: assert fit_max_batch(rn, torch.rand(3, 3, 8, 8), device='cuda', **kw) == expect
    assert calls[:2] == ['sync', 'reset'] and calls.count('sync') == 2


@pytest.mark.parametrize('grad', [False, True])
def test_fit_probe_leaves_rng_buffers_and_gradients_alone(grad):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(5))
    rn = RandomizedNetwork(base, NoiseInjection('gaussian', 0.5)); rn(torch.zeros(2, 3, 8, 8)); rn.train()
    seen = []
    rn.register_forward_hook(lambda m, i, o: seen.append((o.shape[0], torch.is_grad_enabled(), i[0].requires_grad)))
    before = [b.clone() for b in rn.buffers()]
    with torch.inference_mode(): x = torch.rand(3, 3, 8, 8)                # inputs made under inference mode, as in label_counts
    state = torch.get_rng_state()
    _, fake = fake_cuda(40 * GiB, 10 * MiB)
    with fake, torch.inference_mode(): rows = fit_max_batch(rn, x, device='cuda', grad=grad)
    assert rows == 2048 and seen == [(512, grad, grad)]            # one probe of the floor's 512 rows, with a graph iff grad
    assert torch.equal(torch.get_rng_state(), state)               # global random state restored
    assert all(torch.equal(a, b) for a, b in zip(before, rn.buffers()))   # batch-norm statistics restored
    assert all(p.grad is None for p in rn.parameters())            # only the input gradient was computed


def test_fitted_rows_are_measured_once_per_kind_of_pass(monkeypatch):
    asked = []
    def stub(model, x, grad=False, **kw):
        asked.append((tuple(x.shape[1:]), grad)); return 4096 if grad else 16384
    monkeypatch.setattr(noise, 'fit_max_batch', stub)
    rn = RandomizedNetwork(tiny_base(), NoiseInjection('gaussian', 0.5)).eval()
    x = torch.rand(3, 3, 8, 8)
    assert [noise._fitted_rows(rn, x, g) for g in (False, False, True, True)] == [16384, 16384, 4096, 4096]
    assert noise._fitted_rows(rn, torch.rand(5, 3, 16, 16), False) == 16384      # another image size: measured again
    assert asked == [((3, 8, 8), False), ((3, 8, 8), True), ((3, 16, 16), False)]
    rn.train(); noise._fitted_rows(rn, x, False); assert len(asked) == 4        # train mode: measured again


def test_mc_precision_reaches_every_counted_draw_and_the_cache_key(tmp_path):
    "An Experiment's `mc_precision` is set on its networks and keys its cached evaluations; 'auto' is fp32 on a CPU."
    from randsmooth_nb.experiments import Experiment, resolve_precision
    assert resolve_precision('auto', 'cpu', 'mc_precision') == 'fp32'
    with pytest.raises(ValueError, match="unknown mc_precision 'half'; valid choices: fp32, bf16, auto"):
        resolve_precision('half', 'cpu', 'mc_precision')
    ex = Experiment('exp_table1', dict(preset='smoke', seed=0, data_dir='', out_dir=str(tmp_path), cache_dir=str(tmp_path/'c'),
                                       device='cpu', download=False))
    assert ex.mc_precision == 'fp32'
    calls = []
    for prec in ('fp32', 'bf16', 'bf16'):
        ex.mc_precision = prec
        ex.cached('probe', {'a': 1}, lambda partial, prec=prec: calls.append(prec) or {'prec': prec})
    assert calls == ['fp32', 'bf16']                       # bf16 computed once, under its own key; fp32 not reused for it
    assert len(list((tmp_path/'c'/'evals').glob('probe-*.json'))) == 2
    ex.mc_precision = 'bf16'
    assert ex.model('gaussian', 0.5).mc_precision == 'bf16'       # the networks it hands out count their draws in it
