"""Tests of randsmooth_nb.training: the paper's learning-rate schedule, configuration checks, learning on synthetic data,
bit-exact resume (after stop_after_steps and after a real SIGKILL of a training subprocess), the model cache, Madry
adversarial training, CPU fallbacks (amp, channels_last, cuda)."""
import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from conftest import FAST_LR, tiny_config
from randsmooth_nb.core import get_device
from randsmooth_nb.data import load_dataset, to_model_range
from randsmooth_nb.training import (PAPER_LR_FRACTIONS, PAPER_LR_VALUES, TrainConfig, get_model, madry_config,
                                    model_key, pgd_linf_train, piecewise_lr, train)

SET = settings(max_examples=25, deadline=None)
RUN = dict(device='cpu', progress=False, channels_last=False)


def first_switch(total, value_above, fractions=PAPER_LR_FRACTIONS, values=PAPER_LR_VALUES):
    "First step whose learning rate is below `value_above`, by bisection on the (non-increasing) schedule."
    lo, hi = 0, total
    while lo < hi:
        mid = (lo + hi) // 2
        if piecewise_lr(mid, total, values, fractions) < value_above: hi = mid
        else: lo = mid + 1
    return lo


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------- schedule

def test_piecewise_lr_paper_schedule():
    T = 200 * 50_000 // 400                       # 200 epochs of CIFAR-10 with batch 400
    assert T == 25_000
    expect = {0: 0.1, 7_499: 0.1, 7_500: 0.02, 14_999: 0.02, 15_000: 0.004, 19_999: 0.004, 20_000: 0.00008, 24_999: 0.00008}
    for step, lr in expect.items(): assert piecewise_lr(step, T) == lr, step
    assert [first_switch(T, v) for v in PAPER_LR_VALUES[:3]] == [7_500, 15_000, 20_000]


@SET
@given(total=st.integers(1, 10**7))
def test_piecewise_lr_any_total(total):
    steps = sorted({0, total - 1, *(min(total - 1, int(f * total) + d) for f in PAPER_LR_FRACTIONS for d in (-1, 0, 1))} - {-1})
    lrs = [piecewise_lr(s, total) for s in steps]
    assert lrs == sorted(lrs, reverse=True)                       # non-increasing
    assert set(lrs) <= set(PAPER_LR_VALUES)
    if total >= 3: assert piecewise_lr(total - 1, total) == 0.00008       # the last steps use the last rate
    for v, f in zip(PAPER_LR_VALUES[:3], PAPER_LR_FRACTIONS):     # each switch within half a step of f * total
        assert abs(first_switch(total, v) - f * total) <= 0.5 + 1e-9


# ---------------------------------------------------------------- configuration

@pytest.mark.parametrize('kw,msg', [
    (dict(arch='resnet-9000'), 'tiny'), (dict(dist='cauchy'), 'gaussian, laplace, uniform'),
    (dict(at='middle'), 'input, first_layer'), (dict(sd=-0.1), 'sd'), (dict(sd=float('nan')), 'sd'),
    (dict(lr_fractions=(0.6, 0.3, 0.8)), 'increasing'), (dict(lr_fractions=(0.3, 0.6, 1.0)), 'inside'),
    (dict(lr_fractions=(0.3, 0.6)), 'one more'), (dict(lr_values=(0.1, -0.02, 0.004, 0.0)), '>= 0'),
    (dict(epochs=0), 'epochs'), (dict(batch_size=0), 'batch_size'),
    (dict(adv_eps=0.03, adv_steps=0, adv_step=0.01), 'adv_steps'), (dict(adv_eps=0.03, adv_steps=3, adv_step=0.0), 'adv_step'),
    (dict(adv_eps=-0.01), 'adv_eps'), (dict(train_size=0), 'train_size')])
def test_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg): TrainConfig(**kw)


def test_config_defaults_are_the_paper_recipe():
    c = TrainConfig()
    assert (c.arch, c.epochs, c.batch_size, c.momentum, c.lr_values, c.lr_fractions) == \
           ('wrn-28-10', 200, 400, 0.9, PAPER_LR_VALUES, PAPER_LR_FRACTIONS)
    m = madry_config()
    assert m.adversarial and m.sd == 0 and m.adv_steps == 7 and m.adv_eps == pytest.approx(16 / 255)
    assert TrainConfig(lr_values=[0.1, 0.02, 0.004, 0.00008]) == c       # lists are normalised to tuples


# ---------------------------------------------------------------- learning

def test_training_learns(det_run, noisy_run):
    for run, floor in ((det_run, 0.6), (noisy_run, 0.5)):          # chance is 0.1
        assert run.status == 'finished' and len(run.history) == run.config.epochs
        assert run.test_accuracy > floor, run.test_accuracy
        assert run.history[-1]['train_loss'] < run.history[0]['train_loss']
        assert all(math.isfinite(h['train_loss']) for h in run.history)


# ---------------------------------------------------------------- exact resume

RESUME_CFG = dict(sd=0.2, epochs=3, batch_size=25, augment=True)       # noise + augmentation: every RNG matters


@pytest.fixture(scope='module')
def small_data():
    return (load_dataset('synthetic', 'train', n=200, image_size=16, seed=3),
            load_dataset('synthetic', 'test', n=60, image_size=16, seed=3))


@pytest.fixture(scope='module')
def reference_run(small_data):
    "The uninterrupted run every resumed run must reproduce bit for bit."
    return train(tiny_config(**RESUME_CFG), *small_data, **RUN)


def check_equal_runs(res, ref):
    assert res.status == 'finished' and res.step == ref.step == 24
    assert_same_weights(res.model, ref.model)
    strip = lambda h: [{k: v for k, v in r.items() if k != 'seconds'} for r in h]
    assert strip(res.history) == strip(ref.history)


@pytest.mark.parametrize('stops', [(5,), (8,), (3, 13, 14)])       # mid-epoch, at an epoch end, several times
def test_resume_in_process(stops, small_data, reference_run, tmp_path):
    cfg = tiny_config(**RESUME_CFG)
    for s in stops:
        part = train(cfg, *small_data, run_dir=tmp_path, stop_after_steps=s, **RUN)
        assert part.status == 'interrupted' and part.step == s
        torch.manual_seed(12345); torch.randn(100)                   # disturb the global RNG between calls
    check_equal_runs(train(cfg, *small_data, run_dir=tmp_path, **RUN), reference_run)
    assert (tmp_path / 'train_log.csv').read_text().count('\n') == 4  # header + 3 epochs


def test_resume_refuses_another_config(small_data, tmp_path):
    train(tiny_config(**RESUME_CFG), *small_data, run_dir=tmp_path, stop_after_steps=2, **RUN)
    with pytest.raises(ValueError, match='different configuration'):
        train(tiny_config(**{**RESUME_CFG, 'seed': 1}), *small_data, run_dir=tmp_path, **RUN)


KILL_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from randsmooth_nb.data import load_dataset
from randsmooth_nb.training import TrainConfig, train
cfg = TrainConfig(**json.loads(sys.argv[1]))
data = (load_dataset('synthetic', 'train', n=200, image_size=16, seed=3), load_dataset('synthetic', 'test', n=60, image_size=16, seed=3))
print('start', flush=True)
train(cfg, *data, run_dir=sys.argv[2], ckpt_every_steps=1, device='cpu', progress=False, channels_last=False)
"""


def test_resume_after_sigkill(small_data, reference_run, tmp_path):
    cfg = tiny_config(**RESUME_CFG)
    ckpt = tmp_path / 'checkpoint.pt'
    proc = subprocess.Popen([sys.executable, '-c', KILL_SCRIPT, json.dumps(asdict(cfg)), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    try:
        t0 = time.time()
        def ckpt_step():       # the checkpoint is replaced atomically, so it can be read while training goes on
            try: return torch.load(ckpt, weights_only=False)['step'] if ckpt.exists() else 0
            except Exception: return 0
        while ckpt_step() < 10 and proc.poll() is None and time.time() - t0 < 120: time.sleep(0.002)   # past an epoch end
        if proc.poll() is None: os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None: proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    assert ckpt.exists(), err.decode()[-2000:]
    killed_at = torch.load(ckpt, weights_only=False)['step']
    print(f'training subprocess: returncode {proc.returncode}, last checkpoint at step {killed_at} of 24')
    assert 1 <= killed_at <= 24
    if proc.returncode == -signal.SIGKILL: assert killed_at < 24    # it really was killed mid-run
    res = train(cfg, *small_data, run_dir=tmp_path, **RUN)
    check_equal_runs(res, reference_run)


# ---------------------------------------------------------------- cache

def test_get_model_cache(small_data, tmp_path):
    tr, te = small_data
    cfg = tiny_config(epochs=1, batch_size=50)
    kw = dict(cache_dir=tmp_path, **RUN)
    first = get_model(cfg, tr, te, **kw)
    assert first.status == 'finished' and first.key == model_key(cfg, tr)
    again = get_model(cfg, load_dataset('synthetic', 'train', n=200, image_size=16, seed=3), te, **kw)   # same content
    assert again.status == 'cached' and again.key == first.key and not again.model.training
    assert_same_weights(again.model, first.model)
    assert again.history == first.history
    other_cfg = get_model(replace(cfg, seed=1), tr, te, **kw)
    assert other_cfg.status == 'finished' and other_cfg.key != first.key
    tr2 = load_dataset('synthetic', 'train', n=200, image_size=16, seed=4)
    assert tr2.fingerprint != tr.fingerprint
    other_data = get_model(cfg, tr2, te, **kw)
    assert other_data.status == 'finished' and other_data.key not in (first.key, other_cfg.key)
    assert get_model(cfg, tr, te, retrain=True, **kw).status == 'finished'
    assert len(list((tmp_path / 'models').iterdir())) == 3


def test_get_model_resumes_an_interrupted_training(small_data, tmp_path):
    tr, te = small_data
    cfg = tiny_config(epochs=2, batch_size=50)
    part = get_model(cfg, tr, te, cache_dir=tmp_path, stop_after_steps=3, **RUN)
    assert part.status == 'interrupted' and not (tmp_path / 'models' / part.key / 'model.pt').exists()
    done = get_model(cfg, tr, te, cache_dir=tmp_path, **RUN)
    assert done.status == 'finished' and (tmp_path / 'models' / done.key / 'model.pt').exists()
    assert not (tmp_path / 'models' / done.key / 'checkpoint.pt').exists()
    assert_same_weights(done.model, train(cfg, tr, te, **RUN).model)


# ---------------------------------------------------------------- Madry adversarial training

@settings(max_examples=15, deadline=None)
@given(eps=st.floats(1e-3, 0.5), step=st.floats(1e-3, 0.3), steps=st.integers(1, 4), seed=st.integers(0, 100))
def test_pgd_linf_train_stays_in_the_ball(det_run, eps, step, steps, seed):
    model = det_run.model
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(6, 3, 16, 16, generator=g) * 2 - 1)
    x[0] = 1.0; x[1] = -1.0                                     # saturated images: the box constraint binds
    y = torch.randint(0, 10, (6,), generator=g)
    model.train()
    try:
        xa = pgd_linf_train(model, x, y, eps, step, steps)
        assert model.training                                   # mode restored
    finally: model.eval()
    assert not xa.requires_grad
    assert (xa - x).abs().max() <= eps + 1e-6
    assert xa.min() >= -1 and xa.max() <= 1


def test_pgd_linf_train_increases_the_loss(det_run, eval_xy):
    x, y = eval_xy[0][:100], eval_xy[1][:100]
    torch.manual_seed(0)
    xa = pgd_linf_train(det_run.model, x, y, 0.06, 0.015, 5)
    with torch.no_grad():
        assert F.cross_entropy(det_run.model(xa), y) > F.cross_entropy(det_run.model(x), y) + 0.5


def test_madry_training_runs(small_data):
    cfg = madry_config(arch='tiny', epochs=1, batch_size=50, lr_values=FAST_LR, augment=False, adv_steps=2)
    res = train(cfg, *small_data, **RUN)
    assert res.status == 'finished' and res.step == 4
    assert math.isfinite(res.history[-1]['train_loss'])
    assert res.model.noise.sd == 0


# ---------------------------------------------------------------- CPU fallbacks

def test_amp_and_channels_last_fall_back_on_cpu(small_data):
    cfg = tiny_config(sd=0.1, epochs=1, batch_size=50)
    a = train(cfg, *small_data, device='cpu', progress=False, amp=True, channels_last=True)
    b = train(cfg, *small_data, device='cpu', progress=False, amp=False, channels_last=True)
    c = train(cfg, *small_data, device='cpu', progress=False, amp=True, channels_last=False)
    for r in (a, b, c):
        assert r.status == 'finished' and math.isfinite(r.history[-1]['train_loss'])
        assert all(torch.isfinite(v).all() for v in r.model.state_dict().values() if v.is_floating_point())
    assert_same_weights(a.model, b.model)                          # amp is ignored on the CPU
    assert next(a.model.parameters()).dtype == torch.float32
    sa, sc = a.model.state_dict(), c.model.state_dict()
    for k in sa: torch.testing.assert_close(sa[k], sc[k], rtol=1e-3, atol=1e-4)   # memory format: same maths


def test_cuda_request_falls_back_to_cpu(small_data):
    if torch.cuda.is_available(): pytest.skip('this test is for machines without CUDA')
    for name in ('cuda', 'cuda:1'):
        with pytest.warns(UserWarning, match='CUDA'): assert get_device(name) == torch.device('cpu')
    with pytest.warns(UserWarning, match='CUDA'):
        res = train(tiny_config(epochs=1, batch_size=100), *small_data, device='cuda', progress=False)
    assert next(res.model.parameters()).device.type == 'cpu'
    with pytest.raises(ValueError, match='cpu, cuda, mps'): get_device('tpu')


# ---------------------------------------------------------------- GPU speed-ups (cuDNN autotuning, torch.compile)

from types import SimpleNamespace
import warnings

from torch import nn

import randsmooth_nb.training as training
from randsmooth_nb.noise import RandomizedNetwork
from randsmooth_nb.training import compile_problem, fast_kernels


@pytest.fixture
def cudnn_flags():
    "Leave cudnn.benchmark and the deterministic-algorithms switch as they were."
    bench, det = torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    torch.backends.cudnn.benchmark = False
    yield
    torch.backends.cudnn.benchmark = bench; torch.use_deterministic_algorithms(det)


@pytest.mark.parametrize('dev,det,inside', [('cpu', False, False), ('mps', False, False), ('cuda', False, True), ('cuda', True, False)])
def test_fast_kernels_sets_cudnn_benchmark_only_on_cuda_without_determinism(cudnn_flags, dev, det, inside):
    torch.use_deterministic_algorithms(det)
    lin = nn.Linear(2, 2)
    with fast_kernels(SimpleNamespace(model=lin, device=torch.device(dev))) as s:
        assert torch.backends.cudnn.benchmark is inside and s.model is lin
    assert torch.backends.cudnn.benchmark is False
    torch.backends.cudnn.benchmark = True                          # a caller's True survives too
    with fast_kernels(SimpleNamespace(model=lin, device=torch.device(dev))): pass
    assert torch.backends.cudnn.benchmark is True


def test_fast_kernels_restores_after_an_error(cudnn_flags, monkeypatch):
    lin, calls = nn.Linear(2, 2), []
    monkeypatch.setattr(training, 'compile_problem', lambda d: None)           # as on a CUDA machine with Triton
    monkeypatch.setattr(torch, 'compile', lambda m: calls.append(m) or SimpleNamespace(compiled=m))
    s = SimpleNamespace(model=lin, device=torch.device('cuda'))
    with pytest.raises(RuntimeError, match='step failed'):
        with fast_kernels(s, compile=True):
            assert s.model.compiled is lin and torch.backends.cudnn.benchmark
            raise RuntimeError('step failed')
    assert s.model is lin and calls == [lin] and torch.backends.cudnn.benchmark is False


def test_compile_problem_names_what_is_missing(monkeypatch):
    import torch.utils._triton
    monkeypatch.setattr(torch.utils._triton, 'has_triton', lambda: False)
    assert 'Triton' in compile_problem(torch.device('cuda'))
    assert 'mps' in compile_problem(torch.device('mps'))
    import torch._inductor.cpp_builder as cb
    def no_compiler(): raise RuntimeError('no g++')
    monkeypatch.setattr(cb, 'get_cpp_compiler', no_compiler)
    assert 'C++ compiler' in compile_problem(torch.device('cpu'))


def test_compile_unavailable_warns_and_trains_eagerly(small_data, monkeypatch):
    cfg = tiny_config(sd=0.1, epochs=1, batch_size=50)
    eager = train(cfg, *small_data, **RUN)
    monkeypatch.setattr(training, 'compile_problem', lambda d: 'no compiler in this test')
    with pytest.warns(UserWarning, match='compile=True ignored, training eagerly: no compiler in this test'):
        res = train(cfg, *small_data, compile=True, **RUN)
    assert res.status == 'finished'
    assert_same_weights(res.model, eager.model)                    # eager again: bit for bit the same run


def test_compile_is_not_part_of_the_model_cache_key(small_data, tmp_path, monkeypatch):
    cfg = tiny_config(sd=0.1, epochs=1, batch_size=50)
    r1 = get_model(cfg, small_data[0], cache_dir=tmp_path, **RUN)
    monkeypatch.setattr(training, 'train', lambda *a, **k: pytest.fail('a cached model must not be trained again'))
    r2 = get_model(cfg, small_data[0], cache_dir=tmp_path, compile=True, **RUN)
    assert (r1.status, r2.status) == ('finished', 'cached') and r1.key == r2.key
    assert_same_weights(r1.model, r2.model)


@pytest.mark.skipif(compile_problem(torch.device('cpu')) is not None,
                    reason=f"torch.compile cannot run on this CPU: {compile_problem(torch.device('cpu'))}")
def test_compile_trains_and_returns_the_plain_module(small_data):
    "torch.compile on the CPU (needs a C++ compiler; about 40 s of compilation on the 2-core machine)."
    cfg = tiny_config(sd=0.1, epochs=1, batch_size=50)
    eager = train(cfg, *small_data, **RUN)
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='compile=True ignored')   # no silent fall-back to eager here
        res = train(cfg, *small_data, compile=True, **RUN)
    assert res.status == 'finished' and type(res.model) is RandomizedNetwork
    assert list(res.model.state_dict()) == list(eager.model.state_dict())      # no `_orig_mod.` prefix
    assert math.isfinite(res.history[-1]['train_loss'])
    assert all(torch.isfinite(v).all() for v in res.model.state_dict().values() if v.is_floating_point())
