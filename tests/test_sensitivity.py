"Property tests for randsmooth_nb.sensitivity against independent (brute-force / dense-matrix) computations."
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from randsmooth_nb.sensitivity import (NormBound, conv_dense_matrix, conv_fft_bound, conv_power_iteration, dual_norm,
                                       identity_maximiser, identity_sensitivity, lipschitz_composition,
                                       network_lipschitz, operator_norm, parse_norm, sensitivity_bound)

NORMS = st.sampled_from([1.0, 1.5, 2.0, 3.0, math.inf])
SPECIAL = st.sampled_from([1.0, 2.0, math.inf])


def vnorm(x, p, dim=-1): return torch.linalg.vector_norm(x, ord=p, dim=dim)


def brute_ratio(A, p, q, n=4000, seed=0):
    "Lower estimate of ||A||_{p->q}: best ratio over heavy-tailed random points, sign vectors and basis vectors."
    g = torch.Generator().manual_seed(seed)
    d = A.shape[1]
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    X = torch.cat([u ** 3, u.sign(), u, torch.eye(d, dtype=torch.float64)])
    return (vnorm(X @ A.T, q) / vnorm(X, p)).max().item()


def exact_dense_norm_bruteforce(A, p, q):
    "Independent exact values for the closed-form pairs, by enumerating their extremal points."
    d = A.shape[1]
    if p == 1:   # extreme points of the l1 ball are +-e_j
        return vnorm(A, q, dim=0).max().item()
    if math.isinf(p) and d <= 10:   # convex function maximised at a vertex of the cube: enumerate all sign vectors
        S = torch.tensor(np.array(np.meshgrid(*[[-1., 1.]] * d)).reshape(d, -1).T, dtype=torch.float64)
        return vnorm(S @ A.T, q).max().item()
    if p == 2 and q == 2:
        return torch.linalg.matrix_norm(A, 2).item()   # (numpy's threaded SVD is pathologically slow on a busy machine)
    raise NotImplementedError



# one torch thread per test process: see conftest.py

# ---------------------------------------------------------------- parse_norm / identity

def test_parse_norm_and_errors():
    assert parse_norm('linf') == math.inf and parse_norm('L1') == 1 and parse_norm(2) == 2
    for bad in ['fro', 0.5, 0, 'l0', float('nan'), None, True, 'abc']:
        with pytest.raises(ValueError, match='valid choices'): parse_norm(bad)
    assert dual_norm(1) == math.inf and dual_norm(math.inf) == 1 and dual_norm(4) == pytest.approx(4 / 3)


@settings(max_examples=60, deadline=None)
@given(p=NORMS, q=NORMS, d=st.integers(1, 8), alpha=st.floats(0, 10), seed=st.integers(0, 10**6))
def test_identity_sensitivity_vs_brute_force(p, q, d, alpha, seed):
    s = identity_sensitivity(alpha, p, q, d).item()
    # closed form of the sup ratio, computed independently: vertex or all-equal vector, whichever is larger
    e1 = torch.zeros(d, dtype=torch.float64); e1[0] = 1
    one = torch.ones(d, dtype=torch.float64)
    cand = max(1.0, (vnorm(one, q) / vnorm(one, p)).item())
    assert s == pytest.approx(alpha * cand, rel=1e-9, abs=1e-12)
    # random points of the ball never exceed it
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(3000, d, generator=g, dtype=torch.float64)
    u = torch.cat([u, u ** 3, u.sign()])
    r = (vnorm(u, q) / vnorm(u, p)).max().item()
    assert alpha * r <= s * (1 + 1e-9) + 1e-12
    z = identity_maximiser(alpha, p, q, d)
    assert vnorm(z, p).item() == pytest.approx(alpha, abs=1e-9)
    assert vnorm(z, q).item() == pytest.approx(s, rel=1e-9, abs=1e-12)


def test_identity_errors():
    with pytest.raises(ValueError, match=r'\[0, inf\]'): identity_sensitivity(-0.1, 1, 2, 3)
    with pytest.raises(ValueError, match=r'\[0, inf\]'): identity_sensitivity(float('nan'), 1, 2, 3)
    with pytest.raises(ValueError, match='positive integer'): identity_sensitivity(1, 1, 2, 0)
    with pytest.raises(ValueError, match='valid choices'): identity_sensitivity(1, 'l7x', 2, 3)
    assert not torch.isnan(identity_sensitivity(torch.tensor([0., 1., math.inf]), 'inf', 2, 4)).any()


# ---------------------------------------------------------------- dense operator norms

@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 5), n=st.integers(1, 6), p=NORMS, q=NORMS, seed=st.integers(0, 10**6))
def test_dense_operator_norm(m, n, p, q, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64)
    b = operator_norm(A, p, q)
    assert isinstance(b, NormBound) and not math.isnan(b)
    lower = brute_ratio(A, p, q, seed=seed)
    assert lower <= b * (1 + 1e-9)               # any valid upper bound dominates every ratio
    if p == 1 or math.isinf(q) or (p == 2 and q == 2):
        assert b.exact
        if p == 1 or (p == 2 and q == 2) or (math.isinf(q) and math.isinf(p)):
            assert float(b) == pytest.approx(exact_dense_norm_bruteforce(A, p, q), rel=1e-9)
        else:   # p -> inf: attained by the Hölder maximiser of the best row
            i = vnorm(A, dual_norm(p), dim=1).argmax()
            r = A[i]; ps = dual_norm(p)
            x = r.sign() if p == math.inf else r.sign() * r.abs() ** (ps - 1)
            assert (A @ x).abs().max().item() / vnorm(x, p).item() == pytest.approx(float(b), rel=1e-8)
    else:
        assert not b.exact
    if math.isinf(p) and q in (1.0, 2.0) and n <= 8:   # inf -> q is exactly attained at a cube vertex
        assert exact_dense_norm_bruteforce(A, p, q) <= b * (1 + 1e-9)


def test_linear_module_matches_matrix():
    lin = nn.Linear(5, 3)
    assert float(operator_norm(lin, 2, 2)) == pytest.approx(float(np.sqrt(np.linalg.eigvalsh((lambda W: W.T @ W)(lin.weight.detach().double().numpy())).max())), rel=1e-9)
    with pytest.raises(ValueError, match='operator_norm takes'): operator_norm(torch.ones(2, 2, 2), 2, 2)


# ---------------------------------------------------------------- convolutions

@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 3), cout=st.integers(1, 3), k=st.integers(1, 3), stride=st.integers(1, 2),
       padding=st.integers(0, 2), dilation=st.integers(1, 2), H=st.integers(3, 6), seed=st.integers(0, 10**6))
def test_conv_bounds_vs_dense(cin, cout, k, stride, padding, dilation, H, seed):
    if (k - 1) * dilation + 1 > H + 2 * padding: return     # empty output
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation).double()
    shape = (cin, H, H + 1)
    D = conv_dense_matrix(conv, shape)
    x = torch.randn(1, *shape, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(D @ x.flatten(), (conv(x) - conv.bias.view(1, -1, 1, 1)).flatten(), atol=1e-10)
    exact2 = torch.linalg.matrix_norm(D, 2).item()
    lo = conv_power_iteration(conv, shape, 10)
    fft = conv_fft_bound(conv, shape)
    up = operator_norm(conv, 2, 2, input_shape=shape)
    assert lo.kind == 'lower' and up.kind == 'upper' and not up.exact
    assert float(lo) <= exact2 * (1 + 1e-9) + 1e-12
    assert exact2 <= float(fft) * (1 + 1e-9) + 1e-12
    assert exact2 <= float(up) * (1 + 1e-9) + 1e-12 and float(up) <= float(fft) + 1e-12
    for p, q in [(1, 1), (math.inf, math.inf), (1, 2), (2, math.inf), (2, 1), (math.inf, 2), (3, 3)]:
        b = operator_norm(conv, p, q, input_shape=shape)
        # exact dense value for the closed-form pairs, a valid lower estimate otherwise
        ex = exact_dense_norm_bruteforce(D, 1, q) if p == 1 else (
            vnorm(D, dual_norm(p), dim=1).max().item() if math.isinf(q) else brute_ratio(D, p, q, n=1000))
        assert ex <= float(b) * (1 + 1e-9) + 1e-12, (p, q, ex, b)
        if b.exact: assert float(b) == pytest.approx(ex, rel=1e-9, abs=1e-12)


def test_conv_exact_interior_and_requirements():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    shape = (2, 6, 6)
    D = conv_dense_matrix(conv, shape)
    b1, binf = operator_norm(conv, 1, 1, input_shape=shape), operator_norm(conv, 'inf', 'inf', input_shape=shape)
    assert b1.exact and binf.exact
    assert float(b1) == pytest.approx(D.abs().sum(0).max().item()) and float(binf) == pytest.approx(D.abs().sum(1).max().item())
    with pytest.raises(ValueError, match='input_shape'): operator_norm(conv, 2, 2)
    with pytest.raises(ValueError, match='channels'): operator_norm(conv, 2, 2, input_shape=(3, 6, 6))
    with pytest.raises(ValueError, match="padding_mode='zeros'"): operator_norm(nn.Conv2d(2, 3, 3, padding_mode='reflect'), 1, 1)
    # the shape-free pairs work without input_shape
    assert operator_norm(conv, 1, 2) >= 0 and operator_norm(conv, 2, 'inf') >= 0


def test_grouped_conv_fft_bound():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2).double()
    shape = (4, 5, 5)
    exact2 = torch.linalg.matrix_norm(conv_dense_matrix(conv, shape), 2).item()
    assert exact2 <= float(conv_fft_bound(conv, shape)) * (1 + 1e-9)
    # circular structure: a 1x1 conv has the exact norm of its channel matrix
    c1 = nn.Conv2d(3, 2, 1).double()
    assert float(conv_fft_bound(c1, (3, 4, 4))) == pytest.approx(torch.linalg.svdvals(c1.weight[:, :, 0, 0].detach())[0].item())


# ---------------------------------------------------------------- networks

def empirical_gap(f, p, shape, alpha, seed, n=300, steps=25):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    d = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    def proj(d):
        return d * (alpha / vnorm(d.flatten(1), p, dim=1).clamp_min(1e-12)).view(-1, *[1] * len(shape))
    d = proj(d).requires_grad_(True)
    opt = torch.optim.Adam([d], lr=0.05 * alpha)
    best = 0.
    for _ in range(steps):
        gap = vnorm((f(x + d) - f(x)).flatten(1), p, dim=1)
        best = max(best, gap.max().item())
        opt.zero_grad(); (-gap.sum()).backward(); opt.step()
        with torch.no_grad(): d.copy_(proj(d))
    return best


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), p=SPECIAL, kind=st.sampled_from(['mlp', 'conv', 'pool']), alpha=st.floats(0.05, 2))
def test_network_lipschitz_dominates_empirical(seed, p, kind, alpha):
    torch.manual_seed(seed)
    if kind == 'mlp':
        net, shape = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2)), (4,)
    elif kind == 'conv':
        net, shape = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(3, 2, 3, stride=2),
                                   nn.Flatten(), nn.Linear(2 * 2 * 2, 3)), (2, 5, 5)
    else:
        net, shape = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, stride=1), nn.AvgPool2d(2),
                                   nn.Flatten()), (1, 5, 5)
    net = net.double()
    L = network_lipschitz(net, p, shape)
    assert not L.exact and len(L.factors) == len(net)
    bound = sensitivity_bound(L, alpha).item()
    assert empirical_gap(net, p, shape, alpha, seed) <= bound * (1 + 1e-9)


def test_network_lipschitz_single_layer_is_attained_and_errors():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    L = network_lipschitz(lin, 1, (5,))
    j = lin.weight.abs().sum(0).argmax()
    e = torch.zeros(5, dtype=torch.float64); e[j] = 0.3
    with torch.no_grad():
        gap = (lin(e) - lin(torch.zeros(5, dtype=torch.float64))).abs().sum().item()
    assert gap == pytest.approx(sensitivity_bound(L, 0.3).item(), rel=1e-9)
    # output-norm conversion multiplies by the identity factor
    L2 = network_lipschitz(lin, 2, (5,), p_out=1)
    assert float(L2) == pytest.approx(float(network_lipschitz(lin, 2, (5,))) * math.sqrt(3))
    with pytest.raises(ValueError, match='supported:'): network_lipschitz([nn.Linear(3, 3), nn.GELU()], 2, (3,))
    with pytest.raises(ValueError, match='supported:'): network_lipschitz([nn.Dropout(0.5)], 2, (3,))  # training mode
    with pytest.raises(ValueError, match='ceil_mode'): network_lipschitz([nn.AvgPool2d(2, ceil_mode=True)], 2, (1, 5, 5))
    with pytest.raises(ValueError, match=r'\[0, inf\]'): lipschitz_composition(1.0, -2.0)
    with pytest.raises(ValueError, match=r'\[0, inf\]'): sensitivity_bound(2.0, -1.0)
    assert float(lipschitz_composition(2.0, 3.0)) == 6.0


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0, math.inf])
def test_single_layer_constants_are_valid_and_attained(p):
    torch.manual_seed(0)
    # overlapping max pooling: the centre pixel of a 3x3 input lies in all 4 windows -> 4^(1/p), attained
    mp = nn.MaxPool2d(2, stride=1)
    L = float(network_lipschitz(mp, p, (1, 3, 3)))
    assert L == pytest.approx(1.0 if math.isinf(p) else 4 ** (1 / p))
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64); y = x.clone(); y[0, 0, 1, 1] = 0.7
    assert vnorm((mp(y) - mp(x)).flatten(), p).item() == pytest.approx(L * 0.7)
    # batch norm in eval mode: the largest per-channel scale, attained on that channel
    bn = nn.BatchNorm2d(3).double().eval()
    bn.running_var.copy_(torch.tensor([0.5, 2.0, 0.1], dtype=torch.float64)); bn.weight.data.copy_(torch.tensor([1.0, -3.0, 0.2], dtype=torch.float64))
    L = float(network_lipschitz(bn, p, (3, 2, 2)))
    scales = bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)
    assert L == pytest.approx(scales.max().item())
    d = torch.zeros(1, 3, 2, 2, dtype=torch.float64); d[0, 1, 0, 0] = 0.5
    with torch.no_grad(): assert vnorm((bn(d) - bn(torch.zeros_like(d))).flatten(), p).item() == pytest.approx(L * 0.5)
    # average pooling (plain and adaptive) against its dense matrix
    for pool, shape in [(nn.AvgPool2d(2), (2, 4, 4)), (nn.AvgPool2d(3, stride=1, padding=1), (1, 4, 4)), (nn.AdaptiveAvgPool2d(1), (2, 3, 3))]:
        n = int(np.prod(shape))
        D = pool(torch.eye(n, dtype=torch.float64).view(n, *shape)).reshape(n, -1).T
        L = float(network_lipschitz(pool, p, shape))
        exact = exact_dense_norm_bruteforce(D, 1, 1) if p == 1 else (D.abs().sum(1).max().item() if math.isinf(p) else
                 (torch.linalg.matrix_norm(D, 2).item() if p == 2 else brute_ratio(D, p, p, n=500)))
        assert exact <= L * (1 + 1e-9)
        if p in (1.0, math.inf): assert L == pytest.approx(exact)


@pytest.mark.parametrize('kw,shape', [(dict(padding=2), (2, 2, 2)), (dict(padding=2, stride=2), (2, 1, 3)),
                                      (dict(padding=1, stride=3, dilation=2), (2, 4, 5)), (dict(padding='same'), (2, 2, 3))])
def test_conv_exact_pairs_at_borders(kw, shape):
    "Small inputs, large padding: no pixel is interior, yet 1->q and p->inf are exact."
    torch.manual_seed(3)
    conv = nn.Conv2d(2, 3, 3, **kw).double()
    D = conv_dense_matrix(conv, shape)
    for p, q in [(1, 1), (1, 2), (1, 3), (math.inf, math.inf), (2, math.inf), (3, math.inf)]:
        b = operator_norm(conv, p, q, input_shape=shape)
        assert b.exact
        ex = vnorm(D, q, dim=0).max().item() if p == 1 else vnorm(D, dual_norm(p), dim=1).max().item()
        assert float(b) == pytest.approx(ex, rel=1e-10)
