"""Tests of attacks.APGD: the exact worst case of a noisy linear classifier, torchattacks' APGD on a deterministic network
(its [0, 1] world: model m01(x) = model(2x - 1), eps / 2), and on a noisy network against torchattacks' APGD(eot_iter) and
our PGD-EoT with 4x the draws; worst_case's per-input rule; minimum-norm outputs; bad input."""
import copy
import math

import pytest
import torch
import torchattacks
from torch import nn

from randsmooth_nb.attacks import (APGD, EAD, PGD, CarliniWagnerL2, dlr_loss, robust_accuracy_curve, worst_case)
from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork, label_counts


class M01(nn.Module):
    def __init__(self, model): super().__init__(); self.model = model
    def forward(self, x): return self.model(2 * x - 1)


def expected(model, x, y, n=64, seed=99):
    "Per-input fraction of n fresh draws that are correct."
    torch.manual_seed(seed)
    return label_counts(model, x, n)[torch.arange(len(y)), y].double() / n


def mean_se(p): return p.mean().item(), (p.std() / math.sqrt(len(p))).item()


class Affine2(nn.Module):
    def __init__(self, w): super().__init__(); self.w = nn.Parameter(w)
    def forward(self, x): s = x @ self.w; return torch.stack([torch.zeros_like(s), s], -1)


@pytest.fixture(scope='module')
def det(det_run): return det_run.model


@pytest.fixture(scope='module')
def noisy(noisy_run): return noisy_run.model


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_exact_worst_case_of_a_noisy_linear_classifier(norm):
    "Expected accuracy under the worst perturbation: Phi((m - eps ||w||_q) / (sd ||w||_2)), q = 1 (linf) or 2 (l2)."
    torch.manual_seed(0)
    d, sd = 16, 0.5
    eps = 0.05 if norm == 'linf' else 0.3
    w = torch.randn(d); toy = RandomizedNetwork(Affine2(w), NoiseInjection('gaussian', sd)).eval()
    x0, m = torch.rand(200, d) - 0.5, torch.rand(200) * 3
    x = (x0 + ((m - x0 @ w) / w.dot(w))[:, None] * w).clamp(-0.9, 0.9)      # |x_i| <= 0.9: far from the box edges
    x = x[(x @ w) > 0]; y = torch.ones(len(x), dtype=torch.long)
    shrink = w.abs().sum() if norm == 'linf' else w.norm()
    exact = torch.special.ndtr((x @ w - eps * shrink) / (sd * w.norm())).double().mean().item()
    n = 400
    step = eps / 4 if norm == 'linf' else eps / 2
    for atk in (APGD(toy, eps=eps, norm=norm, steps=100, eot=20), PGD(toy, eps=eps, step=step, steps=10, norm=norm, eot=4)):
        xa = atk(x, y)
        acc = (label_counts(toy, xa, n)[:, 1].double() / n).mean().item()
        assert abs(acc - exact) <= 3 * math.sqrt(0.25 / n / len(x)) + 1e-3, (type(atk).__name__, acc, exact)


@pytest.mark.parametrize('loss', ['ce', 'dlr'])
def test_deterministic_within_one_point_of_torchattacks(det, eval_xy, loss):
    model = copy.deepcopy(det).double()
    x, y = eval_xy[0][:200].double(), eval_xy[1][:200]
    eps, steps = 0.03, 20
    torch.manual_seed(0); ours = APGD(model, eps=eps, steps=steps, loss=loss, eot=1)(x, y)
    theirs = 2 * torchattacks.APGD(M01(model).eval(), eps=eps / 2, steps=steps, loss=loss, seed=0)((x + 1) / 2, y) - 1
    with torch.no_grad():
        clean, a1, a2 = [(model(v).argmax(1) == y).double().mean().item() for v in (x, ours, theirs)]
    assert a1 < clean - 0.2, (clean, a1)                  # the attack bites
    assert a1 <= a2 + 0.01, (a1, a2)                      # within one point (or stronger)
    assert (ours - x).abs().max() <= eps + 1e-9 and ours.abs().max() <= 1


def test_noisy_not_weaker_than_torchattacks_nor_pgd_with_4x_draws(noisy, eval_xy):
    x, y = eval_xy[0][:150], eval_xy[1][:150]
    eps, steps, eot = 0.06, 10, 4
    torch.manual_seed(0); ours = APGD(noisy, eps=eps, steps=steps, eot=eot)(x, y)
    torch.manual_seed(0)
    theirs = 2 * torchattacks.APGD(M01(noisy).eval(), eps=eps / 2, steps=steps, eot_iter=eot, seed=0)((x + 1) / 2, y) - 1
    torch.manual_seed(0); pgd = PGD(noisy, eps=eps, step=eps / 4, steps=steps, eot=4 * eot)(x, y)
    (a0, _), (a1, s1), (a2, s2), (a3, s3) = [mean_se(expected(noisy, v, y)) for v in (x, ours, theirs, pgd)]
    assert a1 < a0 - 0.2
    assert a1 <= a2 + 2 * math.hypot(s1, s2), (a1, a2)
    assert a1 <= a3 + 2 * math.hypot(s1, s3), (a1, a3)
    r = (ours - x).flatten(1).abs().amax(1)
    assert (r <= eps + 1e-6).all() and (r > 0).all()     # every input perturbed, inside the ball


def test_restarts_keep_the_higher_loss(noisy, eval_xy):
    x, y = eval_xy[0][:20], eval_xy[1][:20]
    torch.manual_seed(1); a = APGD(noisy, eps=0.06, steps=5, eot=2, n_restarts=3); xa = a(x, y)
    assert a.last_loss.shape == (20,) and (xa - x).abs().max() <= 0.06 + 1e-6


def test_worst_case_rule(noisy, eval_xy):
    x, y = eval_xy[0][:30], eval_xy[1][:30]
    atks = [PGD(noisy, eps=0.06, step=0.015, steps=5, eot=4), APGD(noisy, eps=0.06, steps=5, eot=4),
            APGD(noisy, eps=0.06, steps=5, eot=4, loss='dlr')]
    torch.manual_seed(0)
    r = worst_case(noisy, atks, x, y, n_draws=40, batch_size=16)
    assert r['n'] == 30 and r['attacks'] == ['PGD', 'APGD-CE', 'APGD-DLR'] and sum(r['wins'].values()) == 30
    # the union is at least as strong as its best member, up to MC error of the fresh scoring draws
    assert r['acc_expected'] <= min(r['acc_expected_per_attack'].values()) + 3 * r['se_expected'] + 0.02
    for k in ('expected', 'single', 'vote'):
        assert 0 <= r[f'acc_{k}'] <= 1 and r[f'se_{k}'] >= 0
    # one attack: its own output, scored on fresh draws
    r1 = worst_case(noisy, atks[:1], x, y, n_draws=40)
    assert set(r1['winner']) == {'PGD'}
    with pytest.raises(ValueError, match='non-empty list'): worst_case(noisy, [], x, y)
    with pytest.raises(ValueError, match=r'\[-1, 1\]'): worst_case(noisy, atks, x * 3, y)
    with pytest.raises(ValueError, match='labels'): worst_case(noisy, atks, x, y + 100)
    with pytest.raises(ValueError, match='n_draws'): worst_case(noisy, atks, x, y, n_draws=0)


def test_min_norms_and_curve(det, eval_xy):
    x, y = eval_xy[0][:30], eval_xy[1][:30]
    for atk, p in ((CarliniWagnerL2(det, steps=20, binary_search_steps=3, initial_const=0.1, eot=1), 2),
                   (EAD(det, steps=20, binary_search_steps=3, initial_const=0.1, eot=1), 1)):
        xa = atk(x, y); nrm = atk.last_norms
        with torch.no_grad(): fooled = det(xa).argmax(1) != y
        found = torch.isfinite(nrm)
        assert torch.equal(found, fooled)                     # a finite norm exactly where an adversarial example is returned
        torch.testing.assert_close(nrm[found], (xa - x).flatten(1).norm(p=p, dim=1)[found])
        c = robust_accuracy_curve(nrm, [0.0, 1e9])
        assert c['accuracy'][-1].item() == pytest.approx((~fooled).double().mean().item())
        torch.testing.assert_close(atk.min_norms(x[:8], y[:8]), nrm[:8])   # deterministic: the same search again


def test_bad_input():
    torch.manual_seed(0)
    m = RandomizedNetwork(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), NoiseInjection('gaussian', 0.1)).eval()
    x = torch.rand(3, 3, 2, 2) * 2 - 1; y = torch.tensor([0, 1, 0])
    for kw, msg in [(dict(eps=0), 'eps'), (dict(eps=-1), 'eps'), (dict(eps=0.1, loss='hinge'), 'ce, dlr'),
                    (dict(eps=0.1, norm='l1'), 'linf, l2'), (dict(eps=0.1, steps=0), 'steps'), (dict(eps=0.1, eot=0), 'eot'),
                    (dict(eps=0.1, n_restarts=0), 'n_restarts'), (dict(eps=0.1, rho=0), 'rho'), (dict(eps=0.1, precision='fp16'), 'fp32, bf16')]:
        with pytest.raises(ValueError, match=msg): APGD(m, **kw)
    with pytest.raises(ValueError, match='needs >= 3 classes'): APGD(m, eps=0.1, loss='dlr')(x, y)
    with pytest.raises(ValueError, match='needs >= 3 classes'): dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    for atk in (APGD(m, eps=0.1, steps=1, eot=1), PGD(m, eps=0.1, steps=1, eot=1), CarliniWagnerL2(m, steps=1, binary_search_steps=1, eot=1),
                EAD(m, steps=1, binary_search_steps=1, eot=1)):
        with pytest.raises(ValueError, match=r'\[-1, 1\]'): atk(x + 2, y)
        with pytest.raises(ValueError, match=r'\[0, 1\]'): atk(x, y + 2)
    for A in (PGD, CarliniWagnerL2, EAD):
        with pytest.raises(ValueError, match='fp32, bf16'): A(m, precision='half')
    with pytest.raises(ValueError, match='radii'): robust_accuracy_curve([1.0], [float('nan')])
