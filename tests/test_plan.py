"""Tests of `randsmooth_nb.plan` and `randsmooth-reproduce --plan`.

- The pass counts of two smoke notebooks equal a count by hand from the notebooks' code (written out below).
- A model that several notebooks need is counted once, under the first in run order (also as a property over random
  subsets of notebooks, with hypothesis).
- A model in the cache is reported as cached (exact key when the data was read; by configuration when it was not)
  and costs no training; a checkpoint alone is reported as partly trained and counted in full (an upper bound).
- `--plan` exits 0 and prints the plan when the data are missing, naming them; bad presets and notebooks fail with the
  valid choices, before any work.
"""
import json
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings, strategies as st

from randsmooth_nb.plan import (plan, count, data_info, stand_in, model_status, attack_passes, Passes, NOTEBOOKS)
from randsmooth_nb.training import model_key
from randsmooth_nb.reproduce import main


@pytest.fixture(scope='module')
def smoke_data():
    "notebook -> DataInfo at smoke (synthetic data: made once for the module)."
    return {nb: data_info(nb, 'smoke') for nb in NOTEBOOKS}


def totals(row) -> Passes:
    return sum(row['passes'].values(), Passes())


def test_hand_count_smoke_fig1a(smoke_data, tmp_path):
    # smoke preset (experiments.PRESETS['smoke']): synthetic data, 512 training images of 16x16, test set
    # max(128, test_size 64) = 128 images (Experiment.data); arch 'tiny', 2 epochs, batch 64, n_vote 8.
    # exp_fig1a trains 'none' + (gaussian, laplace) x sd_grid (0.1, 0.5) = 5 models:
    #   training, per model: 2 epochs x (512 // 64 = 8 full batches) x 64 = 1,024 training passes,
    #                        and the test accuracy after each epoch: 2 x min(eval_size 1000, 128) = 256 forward passes;
    #   natural accuracy on ex.test_xy() = 64 images: one pass + n_vote 8 draws = 9 x 64 = 576 forward passes per model.
    # No attack. Totals: train 5 x 1,024 = 5,120; attack 0; forward 5 x (256 + 576) = 4,160.
    r = count('smoke', ['exp_fig1a'], data=smoke_data, device='cpu', cache_dir=str(tmp_path))[0]
    assert [m['status'] for m in r['models']] == ['to train'] * 5
    assert totals(r) == Passes(train=5_120, attack=0, forward=4_160)
    assert r['evaluations'] == 5


def test_hand_count_smoke_cifar100(smoke_data, tmp_path):
    # exp_cifar100 at smoke: synthetic data with 100 classes (the notebook sets ex.num_classes = 100), so its three
    # models ('none', gaussian 0.5, laplace 0.5) are its own: 3 x 1,024 training passes = 3,072, 3 x 256 forward.
    # Clean accuracy on 64 images: 3 x 576 forward.
    # Attacks on ex.test_xy(attack_size 16), attack_batch 16, scored each by 1 + 8 draws = 144 forward passes:
    #   PGD: pgd_steps 4 x EoT (2 on the noisy networks, 1 on 'none') x 16 images: 64 + 2 x 128 = 320 attack passes;
    #   C&W: cw_steps 30 x binary_search_steps 4 x EoT x 16: 1,920 + 2 x 3,840 = 9,600 attack passes; EoT 2 fits one
    #        pass (128 rows // 16 images = 8 draws per pass), so no draws are replayed: no forward passes of its own.
    # Totals: train 3,072; attack 320 + 9,600 = 9,920; forward 768 + 1,728 + 6 x 144 = 3,360.
    r = count('smoke', ['exp_cifar100'], data=smoke_data, device='cpu', cache_dir=str(tmp_path))[0]
    assert totals(r) == Passes(train=3_072, attack=9_920, forward=3_360)
    assert r['evaluations'] == 3 * 3


def test_replayed_draws_depend_on_the_rows_per_pass():
    cw = stand_in('exp_table1', 'paper', 10).attack('cw')           # 9 x 60, EoT 80
    assert attack_passes(cw, 1000, 100, 'cpu') == Passes(attack=43_200_000, forward=0)   # grouped: 80 draws fit 128 rows
    assert attack_passes(dict(cw, eot=4), 1000, 100, 'cuda').forward == 0       # 512 // 100 = 5 draws fit a pass
    assert attack_passes(dict(cw, eot=200), 1000, 100, 'cpu').forward == 9 * 60 * 200 * 1000   # one input's draws > 128 rows
    assert attack_passes(dict(cw, eot=200), 1000, 100, 'cuda').forward == 0     # ... but not > 512
    assert attack_passes(dict(cw, eot=600), 1000, 100, 'cuda').forward == 9 * 60 * 600 * 1000


def test_shared_models_are_counted_once(smoke_data, tmp_path):
    rows = {r['notebook']: r for r in count('smoke', data=smoke_data, device='cpu', cache_dir=str(tmp_path))}
    cert = rows['exp_certificates']
    assert [m['status'] for m in cert['models']] == ['shared with exp_fig1a'] * 2 and totals(cert).train == 0
    alone = count('smoke', ['exp_certificates'], data=smoke_data, device='cpu', cache_dir=str(tmp_path))[0]
    assert totals(alone).train == 2 * 1_024                           # alone it trains its two networks
    assert rows['exp_table2']['reused'] > 0                           # Table 1's evaluations of the sd-0.5 networks
    # at the paper preset: Fig. 1(a)'s 13 networks, Madry's, 6 first-layer ones (CIFAR-10), 3 (CIFAR-100), 2 (ImageNet)
    p = plan('paper', calibration=None, device='cpu', cache_dir=str(tmp_path), load_data=False)
    assert p.total['to_train'] == 13 + 1 + 6 + 3 + 2


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(NOTEBOOKS), unique=True, min_size=1))
def test_each_model_is_trained_once_whatever_the_subset(smoke_data, only):
    rows = count('smoke', only, data=smoke_data, device='cpu', cache_dir='/nonexistent-cache')
    trained = [(m['data'].id, m['config']) for r in rows for m in r['models'] if m['status'] == 'to train']
    needed = {(m['data'].id, m['config']) for r in rows for m in r['models']}
    assert len(trained) == len(set(trained)) == len(needed)
    assert sum(totals(r).train for r in rows) == sum(m['passes'].train for r in rows for m in r['models'] if m['status'] == 'to train')
    assert [r['notebook'] for r in rows] == [n for n in NOTEBOOKS if n in only]      # run order, whatever the order asked


def test_cached_and_partly_trained_models(smoke_data, tmp_path):
    d = smoke_data['exp_fig1a']
    ex = stand_in('exp_fig1a', 'smoke', d.num_classes)
    key = lambda c: model_key(c, SimpleNamespace(fingerprint=d.fingerprint))
    cached, partial = ex.train_config('gaussian', 0.5), ex.train_config('laplace', 0.1)
    (tmp_path/'models'/key(cached)).mkdir(parents=True); (tmp_path/'models'/key(cached)/'model.pt').write_bytes(b'')
    (tmp_path/'models'/key(partial)).mkdir(parents=True); (tmp_path/'models'/key(partial)/'checkpoint.pt').write_bytes(b'')
    r = count('smoke', ['exp_fig1a'], data=smoke_data, device='cpu', cache_dir=str(tmp_path))[0]
    status = {m['label']: m['status'] for m in r['models']}
    assert status == {'none': 'to train', 'gaussian-0.1': 'to train', 'gaussian-0.5': 'cached', 'laplace-0.1': 'partly trained',
                      'laplace-0.5': 'to train'}
    assert totals(r).train == 4 * 1_024                                # the cached one is not trained; the partial one in full
    p = plan('smoke', ['exp_fig1a'], cache_dir=str(tmp_path), calibration=None, device='cpu')
    assert p.total['cached'] == 1 and 'gaussian-0.5 (cached)' in p.table()


def test_cached_by_configuration_when_the_data_is_missing(tmp_path):
    # quick preset, CIFAR-10 not found: no fingerprint, so a cached model of the same configuration counts as 'cached?'
    d = data_info('exp_fig1a', 'quick', data_dir=str(tmp_path/'nowhere'), cache_dir=str(tmp_path))
    assert d.missing and d.fingerprint is None and d.train_n == 50_000
    c = stand_in('exp_fig1a', 'quick', 10).train_config('laplace', 0.5)
    m = tmp_path/'models'/'0123456789abcdef'; m.mkdir(parents=True)
    (m/'config.json').write_text(json.dumps({'config': asdict(c), 'data': 'f' * 16, 'data_label': 'CIFAR-10'}))
    assert model_status(c, d, str(tmp_path)) == 'to train'             # a checkpoint-less, model-less entry is nothing
    (m/'model.pt').write_bytes(b'')
    assert model_status(c, d, str(tmp_path)) == 'cached?'
    assert model_status(stand_in('exp_fig1a', 'quick', 10).train_config('laplace', 0.32), d, str(tmp_path)) == 'to train'


def test_plan_cli_with_missing_data(tmp_path, capsys):
    args = ['--preset', 'quick', '--plan', '--plan-budget', '0', '--cache-dir', str(tmp_path), '--device', 'cpu',
            '--data-dir', str(tmp_path/'no-cifar10'), '--cifar100-dir', str(tmp_path/'no-cifar100')]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Plan for preset 'quick'" in out and 'total' in out
    assert f"MISSING: CIFAR-10: {tmp_path/'no-cifar10'} is not a directory" in out
    assert f"MISSING: CIFAR-100: {tmp_path/'no-cifar100'} is not a directory" in out
    assert 'training-set size is unknown' in out                       # ImageNet without its folder
    assert all(n in out for n in NOTEBOOKS)
    assert not list(tmp_path.iterdir())                               # a plan writes nothing


def test_plan_cli_with_calibration(tmp_path, capsys):
    torch.set_num_threads(1)
    assert main(['--preset', 'smoke', '--plan', '--plan-budget', '2', '--cache-dir', str(tmp_path), '--device', 'cpu',
                 '--only', 'exp_fig1a,exp_cifar100']) == 0
    out = capsys.readouterr().out
    assert 'calibration on CPU' in out and 'tiny 16x16 10 classes' in out and 'tiny 16x16 100 classes' in out
    eta = next(l for l in out.splitlines() if l.startswith('total ')).split()[-1]
    assert eta == '<0.01' or float(eta) > 0                          # an ETA, not '?'
    assert 'worker(s)' not in out                                      # one device: no schedule line
    assert main(['--preset', 'smoke', '--plan', '--plan-budget', '2', '--cache-dir', str(tmp_path), '--device', 'cpu',
                 '--only', 'exp_fig1a,exp_cifar100', '--gpus', '0,1']) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('on 2 worker(s) side by side: '))
    assert 'wall time' in line and 'one after the other' in line


def test_bad_input_names_the_valid_choices(capsys):
    with pytest.raises(ValueError, match='valid choices: paper, quick, smoke'): plan('huge')
    with pytest.raises(ValueError, match="unknown notebook.*'exp_tabel1'.*valid choices: exp_fig1a, exp_table1"):
        plan('smoke', only=['exp_tabel1'])
    with pytest.raises(ValueError, match='valid parameters: seed'): plan('smoke', overrides={'epoch': 3})
    assert main(['--preset', 'smoke', '--plan', '--only', 'exp_tabel1']) == 2
    assert 'valid choices: exp_fig1a' in capsys.readouterr().err
    assert main(['--preset', 'huge', '--plan']) == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert main(['--preset', 'smoke', '--plan', '--plan-budget', '-1']) == 2


def test_a_gpu_calibration_plans_a_gpu_from_a_cpu(smoke_data, tmp_path, recwarn):
    "With a calibration dict measured elsewhere, `device='cuda'` is planned as CUDA here: its precision, its rows, its label."
    rows = count('smoke', ['exp_table1'], data=smoke_data, device='cuda', cache_dir=str(tmp_path))
    specs = {m['spec'] for r in rows for m in r['models']}
    cal = {'device': 'cuda', 'hardware': 'GPU: Test (x1)', 'specs': {s: dict(train_s=1.0, attack_s=1.0, forward_s=1.0) for s in specs}}
    p = plan('smoke', ['exp_table1'], device='cuda', calibration=cal, cache_dir=str(tmp_path))
    assert p.device == 'GPU: Test (x1)' and not [w for w in recwarn if 'falling back' in str(w.message)]
    t = totals(rows[0])
    assert p.rows[0]['unknown'] == [] and p.rows[0]['hours'] == pytest.approx((t.train + t.attack + t.forward) / 3600)
    from randsmooth_nb.plan import _planned_precision
    assert _planned_precision('auto', 'cpu') == 'fp32' and _planned_precision('fp32', 'cuda') == 'fp32'
    if not torch.cuda.is_available(): assert _planned_precision('auto', 'cuda') == 'bf16'   # assumed for the absent GPU
