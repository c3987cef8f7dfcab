"""Tests of randsmooth_nb.sanity: every check on a case where it must pass and on one where it must fail, the
measurements behind them on the tiny trained networks of conftest, and the merged, atomic sanity.csv writer.
(The smoke run of exp_table1 writing sanity.csv is checked in test_experiments.py, which runs the notebooks once.)"""
import csv, math
import pytest
from hypothesis import given, settings, strategies as st
import torch
import torch.nn as nn

from randsmooth_nb.attacks import PGD, CarliniWagnerL2, eot_loss_grad
from randsmooth_nb.noise import RandomizedNetwork, NoiseInjection
from randsmooth_nb.sanity import (SANITY_COLUMNS, SANITY_FILE_COLUMNS, SanityResult, expected_correct, attacked_correct, mean_se,
                                  check_breaks_undefended, pgd_eps_curve, check_eps_monotone, check_eps_one,
                                  check_converged, eot_loss_trace, check_loss_rises, check_guarantee_below_attack,
                                  run_check, write_sanity, read_sanity, NORM_SHRINK_TOL)


@pytest.fixture(scope='module')
def det(det_run): return det_run.model.eval()

@pytest.fixture(scope='module')
def noisy(noisy_run): return noisy_run.model.eval()

@pytest.fixture(scope='module')
def xy(eval_xy, det):
    "40 test images that the undefended network classifies correctly."
    x, y = eval_xy
    with torch.no_grad(): ok = det(x).argmax(1) == y
    return x[ok][:40], y[ok][:40]


def test_expected_correct_without_noise_is_one_pass(det, xy):
    x, y = xy
    p = expected_correct(det, x, y, n_draws=7)
    assert p.dtype == torch.float64 and torch.equal(p, torch.ones(len(x), dtype=torch.float64))
    m, se = mean_se(torch.tensor([0., 1., 1., 0.]))
    assert m == 0.5 and math.isclose(se, math.sqrt(1 / 3) / 2)


def test_expected_correct_with_noise_is_a_fraction(noisy, xy):
    x, y = xy
    p = expected_correct(noisy, x, y, n_draws=50)
    assert ((p * 50).round() == p * 50).all() and 0 < p.mean() <= 1


# (a)
def test_a_strong_attack_passes_weak_attack_fails(det, xy):
    x, y = xy
    strong = attacked_correct(det, PGD(det, eps=0.5, step=0.1, steps=10, eot=1), x, y)
    r = check_breaks_undefended(strong, 'PGD eps 0.5')
    assert r.passed and r.value <= 0.02 and r.threshold == 0.02
    weak = attacked_correct(det, PGD(det, eps=1e-3, step=5e-4, steps=2, eot=1), x, y)
    r = check_breaks_undefended(weak, 'PGD eps 0.001')
    assert not r.passed and r.value > 0.5 and 'too weak' in r.detail


def test_a_unbounded_threshold_is_stricter():
    assert check_breaks_undefended(0.015, 'PGD').passed
    r = check_breaks_undefended(0.015, 'EAD', unbounded=True)
    assert not r.passed and r.threshold == 0.01


# (b)
def test_b_measured_curve_falls_to_zero(det, xy):
    x, y = xy
    c = pgd_eps_curve(det, x, y, [1.0, 0.01, 0.3], steps=10, eot=1)
    assert c['eps'] == [0.01, 0.3, 1.0] and c['accuracy'][0] >= c['accuracy'][-1]
    assert check_eps_monotone(c).passed and check_eps_one(c).passed


def test_b_non_monotone_curve_fails():
    fake = {'eps': [0.06, 0.25, 1.0], 'accuracy': [0.30, 0.55, 0.0], 'se': [0.03, 0.03, 0.0]}
    r = check_eps_monotone(fake, model='fake')
    assert not r.passed and math.isclose(r.value, 0.25) and math.isclose(r.threshold, 2 * math.hypot(0.03, 0.03))
    small = {'eps': [0.06, 0.25], 'accuracy': [0.30, 0.33], 'se': [0.03, 0.03]}    # a rise within MC error
    assert check_eps_monotone(small).passed


def test_b_survivors_at_eps_one_fail():
    r = check_eps_one({'eps': [0.5, 1.0], 'accuracy': [0.3, 0.02], 'se': [0.01, 0.01]})
    assert not r.passed and r.value == 0.02
    with pytest.raises(ValueError, match='no point at eps = 1'): check_eps_one({'eps': [0.5], 'accuracy': [0.1], 'se': [0.0]})
    with pytest.raises(ValueError, match='>= 2 points'): check_eps_monotone({'eps': [0.5], 'accuracy': [0.1], 'se': [0.0]})


# (c)
@pytest.fixture(scope='module')
def toy():
    "A linear 3-class network with Gaussian noise of sd 0.5, and inputs it classifies correctly without noise."
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    for p in lin.parameters(): p.requires_grad_(False)
    x = torch.rand(60, 8) - 0.5
    return RandomizedNetwork(lin, NoiseInjection('gaussian', 0.5)), x, lin(x).argmax(1)


def test_c_converged_attack_passes(toy):
    m, x, y = toy
    torch.manual_seed(1)
    b = attacked_correct(m, PGD(m, eps=0.3, step=0.05, steps=10, eot=16), x, y, 100)
    d = attacked_correct(m, PGD(m, eps=0.3, step=0.05, steps=20, eot=16), x, y, 100)
    r = check_converged(b, d, 'steps', 'PGD')
    assert r.passed and r.check == 'c_steps'


def test_c_unconverged_attack_fails(toy):
    m, x, y = toy
    torch.manual_seed(1)
    b = attacked_correct(m, PGD(m, eps=0.5, step=0.1, steps=1, eot=16, random_start=False), x, y, 100)
    d = attacked_correct(m, PGD(m, eps=0.5, step=0.1, steps=2, eot=16, random_start=False), x, y, 100)
    r = check_converged(b, d, 'steps', 'PGD')
    assert not r.passed and 'not converged' in r.detail and r.figures['accuracy_doubled'] < r.figures['accuracy']
    r = check_converged((0.40, 0.01), (0.30, 0.01), 'eot', 'PGD')
    assert not r.passed and r.check == 'c_eot'
    with pytest.raises(ValueError, match='valid choices: steps, eot'): check_converged((0.4, 0.1), (0.4, 0.1), 'lr', 'PGD')



def test_c_min_norm_judged_on_norms(toy):
    "C&W on the noise-free linear toy: a run that has converged passes on its norms; one cut at 3 steps does not."
    m, x, y = toy
    clean = RandomizedNetwork(m.base, NoiseInjection('gaussian', 0.0))
    def run(steps, bs):
        a = CarliniWagnerL2(clean, steps=steps, binary_search_steps=bs, lr=0.05, eot=1, abort_early=False)
        return attacked_correct(clean, a, x, y, 1), a.last_norms
    (b, n1), (d, n2) = run(100, 6), run(200, 6)
    r = check_converged(b, d, 'steps', 'C&W', norms=(n1, n2))
    assert r.passed and r.figures['found'] == 1.0, r
    w = m.base[1].weight; z = m.base(x)                     # the exact minimal l2 distance to another class
    exact = torch.stack([(z[i, y[i]] - z[i]).div((w[y[i]] - w).norm(dim=1)).masked_fill(torch.arange(3) == y[i], math.inf).min()
                         for i in range(len(y))])
    assert (n2 / exact).median() < 1.05, (n2 / exact).median()
    (b, n1), (d, n2) = run(3, 2), run(6, 2)
    r = check_converged(b, d, 'steps', 'C&W', norms=(n1, n2))
    assert not r.passed and 'not converged' in r.detail, r


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 10.0), min_size=5, max_size=40), st.floats(0.5, 1.5), st.floats(0.0, 1.0))
def test_c_min_norm_tolerance_property(norms, f, acc):
    "Norms scaled by f with the accuracy unchanged: (c) passes exactly when they shrink by at most NORM_SHRINK_TOL."
    if abs((1 - f) - NORM_SHRINK_TOL) < 1e-3: return
    n = torch.tensor(norms, dtype=torch.float64)
    r = check_converged((acc, 0.05), (acc, 0.05), 'steps', 'C&W', norms=(n, n * f))
    assert r.passed == (1 - f <= NORM_SHRINK_TOL), (f, r.detail)
    assert math.isclose(r.value, 1 - f, abs_tol=1e-9)

# (d)
class _Downhill(PGD):
    "PGD that descends its loss: must fail (d)."
    def forward(self, x, y):
        xa = x.clone()
        for _ in range(self.steps):
            _, g = eot_loss_grad(self.model, xa, y, self.eot)
            xa = self._project(xa - self.step * g.sign(), x)
        return xa


def test_d_pgd_climbs_its_loss(noisy, xy):
    x, y = xy
    atk = PGD(noisy, eps=0.06, step=0.01, steps=8, eot=4)
    t = eot_loss_trace(noisy, atk, x, y, n_draws=20, points=4)
    assert atk.model is noisy and t['n_iterates'] == 8 and t['iteration'][-1] == 8 and len(t['loss']) == 5
    r = check_loss_rises(t, 'PGD')
    assert r.passed and r.value > 0


def test_d_downhill_attack_fails(noisy, xy):
    x, y = xy
    t = eot_loss_trace(noisy, _Downhill(noisy, eps=0.06, step=0.01, steps=8, eot=4), x, y, n_draws=20)
    r = check_loss_rises(t, 'downhill')
    assert not r.passed and r.value < 0
    with pytest.raises(ValueError, match='attack.model must be'): eot_loss_trace(noisy, PGD(nn.Linear(2, 2)), x, y)


# (e)
def test_e_guarantee_below_attack():
    assert check_guarantee_below_attack(0.20, 0.25, 0.02, 'strongest', radius=0.25).passed
    assert check_guarantee_below_attack(0.28, 0.25, 0.02, 'strongest').passed            # within 2 s.e.
    r = check_guarantee_below_attack(0.40, 0.25, 0.02, 'strongest', radius=0.25)
    assert not r.passed and math.isclose(r.threshold, 0.29)


def test_run_check_records_a_failure_instead_of_raising():
    def broken(): raise ImportError("cannot import name 'APGD'")
    r = run_check('a_breaks_undefended', 'APGD-CE-100', 'no noise', broken)
    assert not r.passed and math.isnan(r.value) and "ImportError: cannot import name 'APGD'" in r.detail
    with pytest.raises(ValueError, match='unknown check'): SanityResult('f', 'a', 'm', True, 0, 0)


# the file
def test_write_sanity_merges_by_key(tmp_path):
    p = write_sanity([check_breaks_undefended(0.0, 'PGD'), check_breaks_undefended(0.5, 'EAD', unbounded=True)], tmp_path, 'smoke')
    assert p == tmp_path/'smoke'/'sanity.csv'
    write_sanity([check_breaks_undefended(0.0, 'EAD', unbounded=True),                     # replaces its own row
                  check_eps_one({'eps': [1.0], 'accuracy': [0.0], 'se': [0.0]}, model='gaussian 0.5')], tmp_path, 'smoke')
    with open(p, newline='') as f: rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(SANITY_FILE_COLUMNS) == ['notebook', 'check', 'attack', 'model', 'passed', 'value', 'threshold', 'detail']
    assert [(r['check'], r['attack'], r['model'], r['passed']) for r in rows] == [
        ('a_breaks_undefended', 'PGD', 'no noise', 'True'), ('a_breaks_undefended', 'EAD', 'no noise', 'True'),
        ('b_eps_one', 'PGD', 'gaussian 0.5', 'True')]
    assert read_sanity(p) == rows
    assert sorted(f.name for f in p.parent.iterdir()) == ['.sanity.csv.lock', 'sanity.csv']     # no temporary file left
    write_sanity([check_breaks_undefended(0.0, 'PGD')], tmp_path, 'paper')                       # presets do not mix
    assert len(read_sanity(tmp_path/'paper'/'sanity.csv')) == 1 and len(read_sanity(p)) == 3


def test_a_notebooks_rerun_replaces_all_its_rows(tmp_path):
    write_sanity([check_breaks_undefended(0.0, 'C&W-20', unbounded=True), check_breaks_undefended(0.0, 'PGD-20')], tmp_path, 'quick', 'exp_table1')
    write_sanity([check_breaks_undefended(0.0, 'C&W-20', unbounded=True)], tmp_path, 'quick', 'exp_table2')   # same key, other notebook
    p = write_sanity([check_breaks_undefended(0.3, 'C&W-40', unbounded=True)], tmp_path, 'quick', 'exp_table1')  # relabelled rerun
    got = [(r['notebook'], r['attack'], r['passed']) for r in read_sanity(p)]
    assert got == [('exp_table1', 'C&W-40', 'False'), ('exp_table2', 'C&W-20', 'True')]                  # nothing stale of exp_table1
    rows = [dict(r, notebook='exp_fig1bc') for r in read_sanity(p)]                                      # a row's own notebook wins
    write_sanity(rows[:1], tmp_path, 'quick', 'ignored')
    assert {r['notebook'] for r in read_sanity(p)} == {'exp_table1', 'exp_table2', 'exp_fig1bc'}


def test_reads_and_migrates_a_file_without_the_notebook_column(tmp_path):
    old = tmp_path/'quick'/'sanity.csv'; old.parent.mkdir()
    old.write_text(','.join(SANITY_COLUMNS) + '\n' + 'a_breaks_undefended,PGD-20,no noise,True,0,0.02,x\n'
                   + 'c_eot,PGD-20,gaussian 0.5,True,0,0.1,y\n')
    assert [(r['notebook'], r['check']) for r in read_sanity(old)] == [('', 'a_breaks_undefended'), ('', 'c_eot')]
    write_sanity([check_breaks_undefended(0.5, 'PGD-20')], tmp_path, 'quick', 'exp_table1')             # replaces the legacy row by key
    rows = read_sanity(old)
    assert [(r['notebook'], r['check'], r['passed']) for r in rows] == [('', 'c_eot', 'True'), ('exp_table1', 'a_breaks_undefended', 'False')]
    assert old.read_text().splitlines()[0] == ','.join(SANITY_FILE_COLUMNS)


def test_write_sanity_bad_input(tmp_path):
    with pytest.raises(ValueError, match='needs exactly the keys'): write_sanity([{'check': 'a'}], tmp_path, 'smoke')
    with pytest.raises(ValueError, match='preset must be a plain name'): write_sanity([], tmp_path, '../x')
    bad = tmp_path/'smoke'/'sanity.csv'; bad.parent.mkdir(); bad.write_text('a,b\n1,2\n')
    with pytest.warns(UserWarning, match='expected'): write_sanity([check_breaks_undefended(0.0, 'PGD')], tmp_path, 'smoke')
    assert len(read_sanity(bad)) == 1


def test_loss_trace_leaves_the_model_as_it_was():
    "The trace wraps the model for the attack: afterwards the model is still in eval mode and its batch-norm statistics unchanged."
    import torch.nn as nn
    from randsmooth_nb.attacks import APGD
    from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork
    from randsmooth_nb.sanity import eot_loss_trace
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    m = RandomizedNetwork(base, NoiseInjection('gaussian', 0.1)).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.rand(5, 3, 8, 8) * 2 - 1; y = torch.randint(0, 3, (5,))
    eot_loss_trace(m, APGD(m, eps=0.1, steps=3, eot=2), x, y, n_draws=4)
    assert not m.training and not any(mod.training for mod in m.modules())
    for k, v in m.state_dict().items(): assert torch.equal(v, before[k]), k
