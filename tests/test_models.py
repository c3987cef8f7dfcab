"""Tests of randsmooth_nb.models: shapes, parameter counts against hand formulas and the published 36.5M,
block ordering against functional re-implementations, depth validation, memory-format invariance, timm IRv2."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from randsmooth_nb.models import (ARCHS, AuthorsBlock, PreActBlock, TinyCNN, WideResNet, build_model, count_parameters,
                                  figure_model_zoo, inception_resnet_v2, input_size, train_throughput)

SET = settings(max_examples=10, deadline=None)


def count_standard(depth, k, classes=10, cin0=3):
    "Hand count of the Zagoruyko-Komodakis WRN (pre-activation, projection only where the shape changes)."
    n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    total = 9 * cin0 * 16
    for g in range(3):
        ci, c = w[g], w[g + 1]
        for i in range(n):
            cb = ci if i == 0 else c
            total += 9 * cb * c + 9 * c * c + 2 * cb + 2 * c            # two 3x3 convs, two BNs
            if i == 0 and (cb != c or g > 0): total += cb * c            # 1x1 projection
    return total + 2 * w[3] + w[3] * classes + classes                    # final BN, linear


def count_authors(depth, k, classes=10, cin0=3):
    "Hand count of the released block: post-activation, BN after the addition, projection in every block of a widening group."
    n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    total = 9 * cin0 * 16 + 2 * 16                                       # stem conv + BN
    for g in range(3):
        ci, c = w[g], w[g + 1]
        for i in range(n):
            cb = ci if i == 0 else c
            total += 9 * cb * c + 9 * c * c + 3 * 2 * c                  # two convs, three BNs
            if ci != c: total += cb * c
    return total + w[3] * classes + classes                               # no final BN


def test_wrn_28_10_published_count():
    with torch.device('meta'):                                            # counts need no real weights
        m = WideResNet(28, 10)
        assert count_parameters(m) == 36_479_194 == count_standard(28, 10)
        assert round(count_parameters(m) / 1e6, 1) == 36.5                # Zagoruyko & Komodakis, Table 1
        assert count_parameters(WideResNet(28, 10, variant='authors')) == count_authors(28, 10)
        assert count_parameters(WideResNet(28, 10, num_classes=100)) == count_standard(28, 10, 100)


@SET
@given(n=st.integers(1, 3), k=st.integers(1, 4), classes=st.integers(2, 20), cin=st.integers(1, 4))
def test_param_counts_by_hand(n, k, classes, cin):
    d = 6 * n + 4
    with torch.device('meta'):
        assert count_parameters(WideResNet(d, k, classes, in_channels=cin)) == count_standard(d, k, classes, cin)
        assert count_parameters(WideResNet(d, k, classes, variant='authors', in_channels=cin)) == count_authors(d, k, classes, cin)


@settings(max_examples=40, deadline=None)
@given(d=st.integers(-5, 60))
def test_depth_validation(d):
    if d >= 10 and (d - 4) % 6 == 0:
        with torch.device('meta'): WideResNet(d, 1)
    else:
        with pytest.raises(ValueError, match='10, 16, 22, 28, 34, 40'): WideResNet(d, 1)


def test_bad_arguments():
    for kw in [dict(widen_factor=0), dict(variant='preact'), dict(dropout=1.0), dict(leaky_slope=-0.1), dict(depth=28.0)]:
        with pytest.raises(ValueError): WideResNet(**kw)
    with pytest.raises(ValueError, match='wrn-28-10, wrn-16-4, wrn-16-2, wrn-16-1, wrn-10-2, wrn-10-1, fast-64-128-128, tiny'): build_model('resnet18')


@pytest.mark.parametrize('arch', [a for a in ARCHS if a != 'inception_resnet_v2'])
def test_forward_shapes(arch):
    torch.manual_seed(0)
    m = build_model(arch, num_classes=13).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad(): out = m(x)
    assert out.shape == (2, 13) and torch.isfinite(out).all()
    assert input_size(arch) == 32
    if count_parameters(m) < 5e6:                                         # backward too (skipped for WRN-28-10: slow on CPU)
        m.train(); m(x).sum().backward()
        assert all(p.grad is not None for p in m.parameters() if p.requires_grad)   # FastConvNet: fixed stem weights, BN scales


@SET
@given(size=st.integers(8, 48), batch=st.integers(1, 3), cin=st.integers(1, 3), variant=st.sampled_from(['zagoruyko', 'authors']))
def test_other_sizes_and_channels(size, batch, cin, variant):
    x = torch.rand(batch, cin, size, size) * 2 - 1
    for m in [WideResNet(10, 1, 5, variant=variant, in_channels=cin), TinyCNN(5, in_channels=cin)]:
        with torch.no_grad(): assert m.eval()(x).shape == (batch, 5)


def test_tiny_is_fast_and_takes_299():
    m = build_model('tiny').eval()
    with torch.no_grad():
        m(torch.zeros(128, 3, 32, 32))
        import time; t0 = time.perf_counter(); m(torch.zeros(128, 3, 32, 32)); dt = time.perf_counter() - t0
        assert m(torch.zeros(1, 3, 299, 299)).shape == (1, 10)
    assert dt < 0.5, dt                                                   # tens of ms unloaded; generous on a shared CPU


def _bn(x, bn): return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomise_bn(m, g):
    for b in m.modules():
        if isinstance(b, nn.BatchNorm2d):
            b.running_mean.copy_(torch.randn(b.num_features, generator=g)); b.running_var.copy_(torch.rand(b.num_features, generator=g) + 0.5)
            b.weight.data.copy_(torch.randn(b.num_features, generator=g)); b.bias.data.copy_(torch.randn(b.num_features, generator=g))


@SET
@given(cin=st.sampled_from([4, 8]), cout=st.sampled_from([4, 8]), stride=st.sampled_from([1, 2]), slope=st.floats(0, 0.3),
       seed=st.integers(0, 1000))
def test_block_order_against_functional_reference(cin, cout, stride, slope, seed):
    "Each block equals an independent functional forward written from the description (eval mode)."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cin, 8, 8, generator=g)
    act = lambda t: F.leaky_relu(t, slope)
    conv = lambda t, c, s=1: F.conv2d(t, c.weight, stride=s, padding=c.kernel_size[0] // 2)
    b = PreActBlock(cin, cout, stride, 0.3, slope).eval(); _randomise_bn(b, g)
    o = act(_bn(x, b.bn1))
    ref = conv(act(_bn(conv(o, b.conv1, stride), b.bn2)), b.conv2)
    ref = ref + (x if (cin == cout and stride == 1) else conv(o, b.shortcut, stride))
    with torch.no_grad(): torch.testing.assert_close(b(x), ref)
    project = cin != cout or stride != 1 or seed % 2 == 0
    a = AuthorsBlock(cin, cout, stride, 0.3, slope, project=project).eval(); _randomise_bn(a, g)
    y = act(_bn(conv(x, a.conv1, stride), a.bn1))
    y = act(_bn(conv(y, a.conv2), a.bn2))
    ref = act(_bn(y + (conv(x, a.shortcut, stride) if project else x), a.bn_out))
    with torch.no_grad(): torch.testing.assert_close(a(x), ref)


def test_authors_variant_structure():
    s, a = WideResNet(16, 4), WideResNet(16, 4, variant='authors')
    assert all(isinstance(b, AuthorsBlock) for g in a.features[3:6] for b in g)
    assert all(isinstance(b, PreActBlock) for g in s.features[1:4] for b in g)
    assert sum(b.shortcut is not None for b in a.modules() if isinstance(b, AuthorsBlock)) == 6      # every block
    assert sum(b.shortcut is not None for b in s.modules() if isinstance(b, PreActBlock)) == 3       # first of each group
    assert isinstance(a.features[-1], nn.Sequential) and isinstance(s.features[-1], nn.LeakyReLU)   # final BN-act only in standard
    assert count_parameters(a) != count_parameters(s)
    a1 = WideResNet(10, 1, variant='authors')
    assert [b.shortcut is None for b in a1.modules() if isinstance(b, AuthorsBlock)] == [True, False, False]
    with torch.no_grad(): assert a.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert build_model('wrn-16-4', variant='authors').variant == 'authors'


def test_he_init():
    torch.manual_seed(0)
    m = WideResNet(16, 8)
    conv = m.features[3][1].conv2                                           # 512 -> 512, 3x3
    assert abs(conv.weight.std().item() / math.sqrt(2 / (9 * 512)) - 1) < 0.02
    assert abs(m.fc.weight.std().item() * math.sqrt(m.fc.in_features) - 1) < 0.1 and (m.fc.bias == 0).all()


@pytest.mark.parametrize('arch,variant', [('wrn-16-2', 'zagoruyko'), ('wrn-10-2', 'authors'), ('tiny', None)])
def test_channels_last_equals_contiguous(arch, variant):
    torch.manual_seed(1)
    m = build_model(arch, **({'variant': variant} if variant else {})).eval()
    _randomise_bn(m, torch.Generator().manual_seed(2))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = m(x)
        out = m.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_count_parameters():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert count_parameters(m) == 3 * 4 + 4 + 4 * 2 + 2
    m[0].weight.requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == 4 + 4 * 2 + 2


def test_build_model_any_wrn_name_and_overrides():
    m = build_model('wrn-22-2', num_classes=3, dropout=0.0, leaky_slope=0.0)
    assert (m.depth, m.widen_factor, m.fc.out_features) == (22, 2, 3)
    assert all(d.p == 0 for d in m.modules() if isinstance(d, nn.Dropout))
    assert all(a.negative_slope == 0 for a in m.modules() if isinstance(a, nn.LeakyReLU))
    with pytest.raises(ValueError, match='10, 16, 22'): build_model('wrn-20-2')


def test_inception_resnet_v2():
    pytest.importorskip('timm')
    m = build_model('inception_resnet_v2', num_classes=10).eval()
    assert input_size('inception_resnet_v2') == 299
    assert 54e6 < count_parameters(m) < 55e6
    with torch.no_grad(): assert m(torch.rand(1, 3, 299, 299) * 2 - 1).shape == (1, 10)
    with torch.device('meta'): assert inception_resnet_v2().get_classifier().out_features == 1000


def test_inception_resnet_v2_without_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, 'timm', None)                        # makes `import timm` fail
    with pytest.raises(ImportError, match=r'pip install randsmooth_nb\[imagenet\]'): inception_resnet_v2()


def test_train_throughput_and_figure():
    r = train_throughput(build_model('tiny'), batch_size=16, steps=2, channels_last=True)
    assert r['img_per_s'] > 0 and r['img_per_s_best'] >= r['img_per_s'] and r['channels_last']
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig = figure_model_zoo(['tiny', 'wrn-10-1'], throughput={'img_per_s': {'tiny': (1.0, 2.0)}, 'machine': 'test'})
    assert len(fig.axes) == 2
    plt.close(fig)


@settings(max_examples=15, deadline=None)
@given(w=st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12)), side=st.integers(9, 20),
       sd=st.floats(0.0, 1.0))
def test_fast_whitening_property(w, side, sd):
    "Whatever the widths, image size and input noise: the '+' half of the stem whitens the patches it was fitted on."
    from randsmooth_nb.models import FastConvNet, check_input_fits
    g = torch.Generator().manual_seed(side)
    x = (torch.rand(40, 3, side, side, generator=g) * 2 - 1).cumsum(-1).clamp(-1, 1)
    x = x + sd * torch.randn(x.shape, generator=g)
    m = FastConvNet(w).fit_whitening(x, eps=1e-7)
    z = m.stem(x)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    assert torch.allclose(torch.cov(z.T), torch.eye(12, dtype=torch.float64), atol=2e-3)
    check_input_fits(f'fast-{w[0]}-{w[1]}-{w[2]}', (side, side))
    assert m.eval()(x[:2]).shape == (2, 10)
