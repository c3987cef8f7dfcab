"""Tests of randsmooth_nb.distributed (`randsmooth-train`) and of the model-cache lock: 2-process DDP runs on the CPU
(gloo) under torchrun, an interrupted run resumed bit for bit, the same recipe as one process, the cache key the
notebooks use, and one training per model when several processes ask for it.

Three torchrun launches of 2 processes, made once by the `runs` fixture (about 40 s on a loaded 2-core machine):
  A  randsmooth-train, stopped after STOP steps;
  B  the same command again while this test process holds the model's lock: it waits, then resumes A and finishes;
  C  this file run as a script: the uninterrupted reference of A+B and a noise-free run, in the same 2 processes.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from randsmooth_nb.training import FileLock, OneProcess, accuracy, get_model, model_key, train

# the smoke preset (tiny network, 512 synthetic 16x16 images, batch 64: 8 steps per epoch)
NOISY = ['--preset', 'smoke', '--sd', '0.25', '--epochs', '4']               # 32 steps
CLEAN = ['--preset', 'smoke', '--sd', '0', '--epochs', '2']                  # 16 steps, no noise: deterministic
COMMON = ['--device', 'cpu', '--quiet', '--no-channels-last']
STOP = 11                                                                    # mid-epoch 2
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1', 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']


def last_json(text:str) -> dict:
    return json.loads([l for l in text.splitlines() if l[:1] in '{['][-1])


def run(cmd, timeout=240) -> str:
    "Run `cmd` in its own process group; kill the whole group if it overstays."
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True)
    try: out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode == 0, out[-3000:]
    return out


def run_while_locked(cmd, lock_path:Path, checkpoint:Path, timeout=240):
    "Start `cmd` while we hold `lock_path`; once it says it is waiting, check it has not trained, then let it go."
    lock = FileLock(lock_path); assert lock.acquire(blocking=False)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True)
    lines, q = [], queue.Queue()
    threading.Thread(target=lambda: [q.put(l) for l in p.stdout] + [q.put(None)], daemon=True).start()
    try:
        t0, waited = time.time(), None
        while time.time() - t0 < timeout:
            l = q.get(timeout=timeout)
            if l is None: break
            lines.append(l)
            if 'waiting for' in l: waited = l; break
        assert waited and f"pid {os.getpid()}" in waited, ''.join(lines)[-3000:]
        time.sleep(1.0)                                                  # a few polls of the lock
        assert torch.load(checkpoint, weights_only=False)['step'] == STOP    # nothing trained meanwhile
        lock.release()
        while (l := q.get(timeout=timeout)) is not None: lines.append(l)
        p.wait(timeout=timeout)
    finally:
        lock.release()
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL); p.wait()
    out = ''.join(lines)
    assert p.returncode == 0, out[-3000:]
    return waited, out


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "The three 2-process launches (see the module docstring) and their JSON summaries."
    resumed, ref = tmp_path_factory.mktemp('resumed'), tmp_path_factory.mktemp('reference')
    t0 = time.time()
    a = last_json(run(TORCHRUN + ['--no-python', str(BIN/'randsmooth-train')] + NOISY + COMMON +
                      ['--cache-dir', str(resumed), '--stop-after-steps', str(STOP)]))
    kd = resumed/'models'/a['key']
    waited, out = run_while_locked(TORCHRUN + ['-m', 'randsmooth_nb.distributed'] + NOISY + COMMON +
                                   ['--cache-dir', str(resumed), '--lock-poll-s', '0.2'], kd/'.lock', kd/'checkpoint.pt')
    b = last_json(out)
    c = last_json(run(TORCHRUN + [__file__, str(ref)]))
    print(f"3 torchrun launches of 2 processes: {time.time() - t0:.1f} s")
    return dict(a=a, b=b, c_noisy=c[0], c_clean=c[1], waited=waited, resumed=resumed, ref=ref)


def state(cache:Path, key:str) -> dict: return torch.load(cache/'models'/key/'model.pt', weights_only=False)


def smoke_experiment(tmp_path, cache, **params):
    from randsmooth_nb.experiments import Experiment
    return Experiment('exp_table1', dict(preset='smoke', seed=0, data_dir='', out_dir=str(tmp_path), cache_dir=str(cache),
                                         device='cpu', download=False, **params))


# ---------------------------------------------------------------- the launches

def test_cli_trains_into_the_notebooks_cache(runs, tmp_path):
    a, b = runs['a'], runs['b']
    assert (a['status'], a['step'], a['processes'], a['model']) == ('interrupted', STOP, 2, None)
    assert (b['status'], b['step'], b['processes']) == ('finished', 32, 2)
    assert Path(b['model']).is_file() and not (Path(b['model']).parent/'checkpoint.pt').exists()
    ex = smoke_experiment(tmp_path, runs['resumed'], epochs=4)             # what exp_table1 at smoke, epochs=4 builds
    tr, te = ex.data()
    assert model_key(ex.train_config('gaussian', 0.25), tr) == b['key']
    ex.model('gaussian', 0.25)                                             # the notebook's call: loads, does not train
    assert ex.models['gaussian-0.25'] == {**ex.models['gaussian-0.25'], 'key': b['key'], 'status': 'cached'}
    log = (Path(b['model']).parent/'train_log.csv').read_text().splitlines()
    assert len(log) == 5 and log[-1].startswith('4,32,')                   # header + 4 epochs, rank 0 only


def test_resume_is_exact(runs):
    b, ref = runs['b'], runs['c_noisy']
    assert b['resumed_from'] == STOP and ref['resumed_from'] is None and b['key'] == ref['key']
    sb, sr = state(runs['resumed'], b['key']), state(runs['ref'], ref['key'])
    assert sb['state_dict'].keys() == sr['state_dict'].keys()
    for k in sb['state_dict']: assert torch.equal(sb['state_dict'][k], sr['state_dict'][k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != 'seconds'} for r in h]
    assert strip(sb['history']) == strip(sr['history'])


def test_waits_for_the_lock(runs):
    assert 'waiting for pid' in runs['waited'] and runs['b']['resumed_from'] == STOP


def test_same_recipe_as_one_process(runs, tmp_path):
    ex = smoke_experiment(tmp_path, tmp_path)
    tr, te = ex.data()
    big = __import__('randsmooth_nb.data', fromlist=['load_dataset']).load_dataset('synthetic', 'test', n=1000, image_size=16, seed=0)
    kw = dict(device='cpu', progress=False, channels_last=False)
    # no noise: the 2-process run is the 1-process run up to the order of floating-point sums
    clean = train(ex.train_config('gaussian', 0.0), tr, te, **kw)
    two = state(runs['ref'], runs['c_clean']['key'])
    for k, v in clean.model.state_dict().items(): torch.testing.assert_close(two['state_dict'][k], v, rtol=1e-3, atol=1e-4, msg=k)
    for h2, h1 in zip(two['history'], clean.history): assert h2['train_loss'] == pytest.approx(h1['train_loss'], rel=1e-4)
    # noise: other draws, the same accuracy within sampling error (run-to-run spread from the noise alone: 0.006)
    noisy_cfg = smoke_experiment(tmp_path, tmp_path, epochs=4).train_config('gaussian', 0.25)
    one = train(noisy_cfg, tr, te, **kw).model
    from randsmooth_nb.training import build_network
    dp = build_network(noisy_cfg, input_hw=(16, 16)); dp.load_state_dict(state(runs['resumed'], runs['b']['key'])['state_dict'])
    torch.manual_seed(0)
    acc = [sum(accuracy(m, big.x, big.y) for _ in range(3)) / 3 for m in (one, dp)]
    print(f"accuracy on 1000 test images, 1 process {acc[0]:.3f}, 2 processes {acc[1]:.3f}")
    assert acc[0] > 0.35 and abs(acc[0] - acc[1]) < 0.08, acc


# ---------------------------------------------------------------- bad input, before any heavy work

def test_bad_input(tmp_path, capsys):
    from randsmooth_nb.distributed import TorchDDP, check_world, main, parse_args, train_one
    class Three(OneProcess):
        world = 3
        def check(self, batch_size): check_world(batch_size, self.world)
    args = parse_args(['--preset', 'smoke', '--dataset', 'cifar10', '--data-dir', str(tmp_path), '--cache-dir', str(tmp_path)])
    with pytest.raises(ValueError, match='does not split evenly over 3 processes; .*1, 2, 4, 8, 16, 32, 64'):
        train_one(args, Three(), torch.device('cpu'))                      # raised before the (missing) data are read
    assert main(['--preset', 'smoke', '--dataset', 'cifar10', '--data-dir', str(tmp_path), '--cache-dir', str(tmp_path)]) == 2
    assert 'randsmooth-train: error:' in capsys.readouterr().err
    with pytest.raises(ValueError, match='at most 64 processes'): check_world(64, 128)
    for argv, msg in ((['--preset', 'fast'], "choose from 'paper', 'quick', 'smoke'"), (['--dist', 'cauchy'], "'uniform'"),
                      (['--madry', '--sd', '0.3'], 'without noise'), (['--sd', '-1'], '>= 0')):
        with pytest.raises(SystemExit): main(argv)
        assert msg in capsys.readouterr().err
    with pytest.raises(RuntimeError, match='torchrun'): TorchDDP('cpu')


def test_compile_flag_reaches_train(tmp_path, monkeypatch):
    "`--compile` is passed on to `get_model` (hence `train(compile=True)`); without it, eager."
    import randsmooth_nb.distributed as D
    seen = []
    monkeypatch.setattr(D, 'get_model', lambda *a, **kw: seen.append(kw.get('compile')))
    for extra, want in (([], False), (['--compile'], True)):
        args = D.parse_args(['--preset', 'smoke', '--cache-dir', str(tmp_path)] + extra)
        D.train_one(args, OneProcess(), torch.device('cpu'))
        assert seen[-1] is want


# ---------------------------------------------------------------- the lock

def test_concurrent_get_model_trains_once(small_cfg_data, tmp_path):
    cfg, tr = small_cfg_data
    status, kd = {}, tmp_path/'models'/model_key(cfg, tr)
    def ask(name): status[name] = get_model(cfg, tr, cache_dir=tmp_path, device='cpu', progress=False, lock_poll_s=0.05).status
    first = threading.Thread(target=ask, args=('first',)); first.start()
    while not (kd/'config.json').exists() and first.is_alive(): time.sleep(0.005)   # written once the lock is held
    ask('second'); first.join()
    assert status == {'first': 'finished', 'second': 'waited'}
    assert (kd/'train_log.csv').read_text().count('\n') == 1 + cfg.epochs          # one training
    assert get_model(cfg, tr, cache_dir=tmp_path, device='cpu').status == 'cached'


def test_lock_is_freed_when_its_holder_is_killed(tmp_path):
    path = tmp_path/'.lock'
    holder = subprocess.Popen([sys.executable, '-c', "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        lock = FileLock(path)
        assert not lock.acquire(blocking=False)
        holder.send_signal(signal.SIGKILL); holder.wait(timeout=30)
        assert lock.acquire(blocking=False); lock.release()              # no stale lock after kill -9
    finally:
        if holder.poll() is None: holder.kill(); holder.wait()


@pytest.fixture
def small_cfg_data():
    from conftest import tiny_config
    from randsmooth_nb.data import load_dataset
    return tiny_config(epochs=2, batch_size=50), load_dataset('synthetic', 'train', n=200, image_size=16, seed=3)


if __name__ == '__main__':       # run by the `runs` fixture under torchrun: the reference runs, in the same 2 processes
    import torch.distributed as dist
    from randsmooth_nb.distributed import init_distributed, parse_args, train_one
    par, dev = init_distributed('cpu')
    res = [train_one(parse_args(a + COMMON + ['--cache-dir', sys.argv[1]]), par, dev) for a in (NOISY, CLEAN)]
    if par.main: print(json.dumps([{'key': r.key, 'status': r.status, 'step': r.step, 'resumed_from': r.resumed_from} for r in res]))
    dist.destroy_process_group()
