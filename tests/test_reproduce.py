"""Tests of the `randsmooth-reproduce` CLI, the main job of the project.

- A smoke reproduction run twice changes no file the second time (bytes and mtimes), inside a throw-away git
  repository with the project's .gitignore, so the real paper_figures/ is never touched.
- A committed-looking quick run survives a rerun where notebooks are skipped (no CIFAR-100, no ImageNet) or fail:
  every earlier `ok` entry and README row is kept, marked stale when its inputs changed, and the files a failing
  notebook overwrote are put back. Fake experiment notebooks (`--nbs-dir`) keep this to two kernel starts.
- Offline (the download URL points at a closed local port), the run stops in seconds with a message naming DATA_DIR,
  --data-dir and the layouts, and writes nothing. Bad directories, corrupt files and bad arguments exit 2 early.
- The committed results hold no machine paths, and the committed theory figures are current.
"""
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

import randsmooth_nb.reproduce as R
from randsmooth_nb.reproduce import NOTEBOOKS, main

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'


def tree(d: Path) -> dict:
    "path -> (bytes, mtime_ns) of every file under `d` (the model cache excluded)."
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob('*')) if p.is_file() and 'cache' not in p.relative_to(d).parts}


def git(repo, *args) -> str:
    return subprocess.run(['git', *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def git_repo(path: Path) -> Path:
    "A fresh git repository with the project's .gitignore, committed."
    path.mkdir(parents=True)
    git(path, 'init', '-q')
    git(path, 'config', 'user.email', 't@example.com'); git(path, 'config', 'user.name', 'test')
    shutil.copy(ROOT/'.gitignore', path/'.gitignore')
    git(path, 'add', '.gitignore'); git(path, 'commit', '-qm', 'init')
    return path


# ---------------------------------------------------------------------------------------------------------------
# a smoke reproduction, twice: the second run changes nothing
def test_smoke_twice_changes_nothing(tmp_path, capsys):
    repo = git_repo(tmp_path/'repo'); out = repo/'paper_figures'
    args = ['--preset', 'smoke', '--only', 'exp_fig1a', '--out-dir', str(out), '--cache-dir', str(tmp_path/'cache'), '--device', 'cpu']
    before = sorted(p.name for p in NBS.iterdir())
    assert main(args) == 0
    log = capsys.readouterr().out
    assert 'exp_fig1a' in log and 'ok in' in log and 'theory figures: drawing' in log
    assert log.strip().splitlines()[-1].startswith('randsmooth-reproduce: done: ran 1 (1 ok, 0 failed), 0 done earlier, 0 skipped')
    assert sorted(p.name for p in NBS.iterdir()) == before            # nothing written next to the sources
    executed = out/'runs'/'smoke'/'exp_fig1a.ipynb'
    nb = nbformat.read(executed, as_version=4)
    assert any('injected-parameters' in c.metadata.get('tags', []) for c in nb.cells)
    assert any(c.get('outputs') for c in nb.cells if c.cell_type == 'code')
    st = json.loads((out/'runs'/'smoke'/'status.json').read_text())
    assert set(st) == {'exp_fig1a'} and st['exp_fig1a']['status'] == 'ok' and st['exp_fig1a']['params']['out_dir'] == 'paper_figures'
    # smoke has its own index; the committed one (paper_figures/README.md) is not written by a smoke run
    idx = (out/'smoke'/'README.md').read_text()
    assert not (out/'README.md').exists()
    table_md = (out/'smoke'/'fig1a_accuracy_vs_sd.md').read_text().strip()
    assert '## Preset `smoke`' in idx and table_md in idx and re.search(r'\| exp_fig1a \| ok \|', idx)
    assert '(fig1a_accuracy_vs_sd.png)' in idx and '(../theory/renyi_orders.png)' in idx
    assert len(list((out/'theory').glob('*.png'))) == 5
    # no machine path in what was written (the project root is tmp_path/repo)
    for p in [executed, out/'runs'/'smoke'/'status.json', out/'smoke'/'exp_fig1a.json', out/'theory'/'theory.json']:
        assert str(tmp_path) not in p.read_text(), p
    # only the theory figures are for git: smoke results are ignored
    changed = git(repo, 'status', '--porcelain', '--untracked-files=all').splitlines()
    assert changed and all(l.startswith('?? paper_figures/theory/') for l in changed), changed
    git(repo, 'add', '-A'); git(repo, 'commit', '-qm', 'theory figures')
    first = tree(out)

    assert main(args) == 0                               # second run: nothing to do, no file touched
    log = capsys.readouterr().out
    assert 'done earlier' in log and 'theory figures: up to date' in log
    assert 'ran 0 (0 ok, 0 failed), 1 done earlier, 0 skipped' in log.strip().splitlines()[-1]
    assert git(repo, 'status', '--porcelain', '--untracked-files=all') == ''
    assert tree(out) == first

    assert main(args + ['--force']) == 0                 # --force reruns the notebook (the theory figures stay)
    log = capsys.readouterr().out
    assert 'done earlier (' not in log and 'ok in' in log and 'theory figures: up to date' in log
    assert executed.stat().st_mtime_ns != first['runs/smoke/exp_fig1a.ipynb'][1]
    assert git(repo, 'status', '--porcelain', '--untracked-files=all') == ''

    # a change in the theory code (simulated: another hash in theory.json) redraws the figures; drawing them twice
    # gives the same bytes (checked in nbs/13_reproduce.ipynb), so here only the redraw is counted
    th = out/'theory'/'theory.json'; m = json.loads(th.read_text()); m['inputs'] = 'other code'; th.write_text(json.dumps(m))
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(R, 'theory_figures', lambda out_dir: calls.append(out_dir) or [])
        assert main(args) == 0 and 'theory figures: drawing' in capsys.readouterr().out and len(calls) == 1


# ---------------------------------------------------------------------------------------------------------------
# a committed-looking quick run, then a run that skips or fails: nothing good is lost
PARAMS = ('preset', 'seed', 'data_dir', 'out_dir', 'cache_dir', 'device', 'download')

def fake_notebook(path: Path, body: str):
    "An experiment notebook with the CLI's parameters and one cell of `body`."
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("preset = ''\nseed = 0\ndata_dir = ''\nout_dir = ''\ncache_dir = ''\ndevice = ''\ndownload = False")
    p.metadata['tags'] = ['parameters']
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, str(path))

FAILING = """from pathlib import Path
d = Path(out_dir)/preset
(d/'table1.md').write_text('half-written\\n'); (d/'new_partial.csv').write_text('x\\n')
raise RuntimeError('boom: the attack diverged')"""

SUCCEEDING = """import json
from pathlib import Path
d = Path(out_dir)/preset
(d/'table1.md').write_text('| a |\\n|---|\\n| new |\\n')
json.dump({'wall_time_s': 2.0, 'data': 'CIFAR-10 (JPEG copy)', 'config': {'params': {'out_dir': out_dir, 'data_dir': data_dir}},
           'artifacts': [str(d/'table1.md')]}, open(d/'exp_fig1a.json', 'w'))"""


@pytest.fixture
def quick_setup(tmp_path, monkeypatch):
    "A project with a committed-looking quick run (every notebook ok), a CIFAR-10 ImageFolder in the cache, fake notebooks."
    cache = tmp_path/'cache'
    for split in ('train', 'test'):
        for c in range(10): (cache/'cifar10-jpeg'/split/f'c{c}').mkdir(parents=True)
    monkeypatch.setenv('RANDSMOOTH_CACHE', str(cache))
    nbs = tmp_path/'nbs'; nbs.mkdir()
    for n in NOTEBOOKS: fake_notebook(nbs/f'{n}.ipynb', "raise RuntimeError('not meant to run')")
    fake_notebook(nbs/'exp_fig1a.ipynb', FAILING)
    repo = git_repo(tmp_path/'repo'); out = repo/'paper_figures'
    (out/'quick').mkdir(parents=True); (out/'runs'/'quick').mkdir(parents=True)
    status = {}
    for n in NOTEBOOKS:
        dd = {'exp_cifar100': '~/data/cifar100', 'exp_imagenet': '~/data/imagenet'}.get(n, '$RANDSMOOTH_CACHE/cifar10-jpeg')
        params = dict(preset='quick', seed=0, data_dir=dd, out_dir='paper_figures', cache_dir='', device='', download=False)
        if n == 'exp_imagenet': del params['download']
        status[n] = {'status': 'ok', 'seconds': 60.0, 'params': params, 'finished': '2026-01-01T00:00:00+00:00',
                     'inputs': 'older inputs' if n == 'exp_fig1a' else R.notebook_inputs(nbs/f'{n}.ipynb', 'quick')}
        nbformat.write(nbformat.v4.new_notebook(), str(out/'runs'/'quick'/f'{n}.ipynb'))
        (out/'quick'/f'{n}.json').write_text(json.dumps({'wall_time_s': 60.0, 'data': 'CIFAR-10 (JPEG copy)'}))
    (out/'runs'/'quick'/'status.json').write_text(R.json_text(status))
    (out/'quick'/'table1.md').write_text('| a |\n|---|\n| good |\n')
    R.theory_figures(out); R.write_index(out)
    git(repo, 'add', '-A'); git(repo, 'commit', '-qm', 'quick results')
    return dict(repo=repo, out=out, nbs=nbs, status=status, args=['--preset', 'quick', '--out-dir', str(out), '--nbs-dir', str(nbs),
                                                                  '--no-download'])


def test_skipped_and_failed_keep_good_results(quick_setup, capsys):
    s = quick_setup; out, repo = s['out'], s['repo']
    assert '| exp_cifar100 | ok |' in (out/'README.md').read_text()

    assert main(s['args']) == 1                          # exp_fig1a reran (older inputs) and failed; two were skipped
    log = capsys.readouterr().out
    assert 'exp_fig1a' in log and 'FAILED' in log and 'boom: the attack diverged' in log and 'its earlier result is kept' in log
    assert 'exp_cifar100      skipped: CIFAR-100 not available' in log and 'exp_imagenet      skipped: needs the ImageNet folder' in log
    last = log.strip().splitlines()[-1]
    assert last.startswith('randsmooth-reproduce: incomplete (exit 1): ran 1 (0 ok, 1 failed), 6 done earlier, 2 skipped: exp_cifar100 (CIFAR-100'), last
    assert 'failed: exp_fig1a (RuntimeError: boom: the attack diverged)' in last
    st = json.loads((out/'runs'/'quick'/'status.json').read_text())
    for n in NOTEBOOKS:                                  # every ok entry kept as it was ...
        assert {k: v for k, v in st[n].items() if k != 'stale'} == s['status'][n], n
    assert 'inputs changed' in st['exp_fig1a']['stale'] and 'failed' in st['exp_fig1a']['stale']   # ... marked stale where inputs changed
    assert all('stale' not in st[n] for n in NOTEBOOKS if n != 'exp_fig1a')
    idx = (out/'README.md').read_text()
    for n in NOTEBOOKS: assert re.search(rf'\| {n} \| ok[ |]', idx), n
    assert '| exp_fig1a | ok (stale: inputs changed since this result; the rerun was failed) | 1m00s |' in idx
    assert (out/'quick'/'table1.md').read_text() == '| a |\n|---|\n| good |\n'    # the half-written table was put back
    assert not (out/'quick'/'new_partial.csv').exists() and (out/'runs'/'quick'/'exp_fig1a.failed.ipynb').exists()
    changed = git(repo, 'status', '--porcelain', '--untracked-files=all').splitlines()
    assert sorted(changed) == [' M paper_figures/README.md', ' M paper_figures/runs/quick/status.json'], changed

    fake_notebook(s['nbs']/'exp_fig1a.ipynb', SUCCEEDING)   # fixed: it reruns, and its files record no machine path
    assert main(s['args']) == 0
    log = capsys.readouterr().out
    assert 'ran 1 (1 ok, 0 failed), 6 done earlier, 2 skipped' in log.strip().splitlines()[-1]
    st = json.loads((out/'runs'/'quick'/'status.json').read_text())
    assert 'stale' not in st['exp_fig1a'] and st['exp_fig1a']['params']['data_dir'] == '$RANDSMOOTH_CACHE/cifar10-jpeg'
    m = json.loads((out/'quick'/'exp_fig1a.json').read_text())
    assert m['config']['params'] == {'out_dir': 'paper_figures', 'data_dir': '$RANDSMOOTH_CACHE/cifar10-jpeg'}
    assert m['artifacts'] == ['paper_figures/quick/table1.md']
    assert str(repo) not in (out/'runs'/'quick'/'exp_fig1a.ipynb').read_text()
    assert '| new |' in (out/'README.md').read_text()
    git(repo, 'add', '-A'); git(repo, 'commit', '-qm', 'rerun')

    first = tree(out)                                    # and a run that has nothing to do changes nothing
    assert main(s['args']) == 0
    assert tree(out) == first and git(repo, 'status', '--porcelain', '--untracked-files=all') == ''


def test_offline_fails_fast_and_touches_nothing(quick_setup, tmp_path, monkeypatch, capsys):
    s = quick_setup; out = s['out']
    monkeypatch.setenv('RANDSMOOTH_CACHE', str(tmp_path/'empty-cache'))      # a fresh machine: nothing cached
    monkeypatch.setattr('torchvision.datasets.CIFAR10.url', 'http://127.0.0.1:9/cifar-10-python.tar.gz')  # nothing listens: offline
    first = tree(out)
    args = [a for a in s['args'] if a != '--no-download']
    t0 = time.time()
    assert main(args) == 2
    assert time.time() - t0 < 20
    cap = capsys.readouterr()
    assert 'torchvision downloads it into' in cap.out
    err = cap.err
    for part in ('could not download CIFAR-10', 'Set DATA_DIR=DIR', '--data-dir DIR', 'cifar-10-batches-py', 'DIR/train/<class>'):
        assert part in err, (part, err)
    assert tree(out) == first and git(s['repo'], 'status', '--porcelain', '--untracked-files=all') == ''

    assert main(s['args']) == 2                          # --no-download: no attempt, the same ways out
    err = capsys.readouterr().err
    assert '--no-download is set' in err and 'DATA_DIR' in err
    assert tree(out) == first


def _wrong_layout(d):
    (d/'train').mkdir(parents=True); (d/'notes.txt').write_text('x')

def _corrupt(d):
    (d/'cifar-10-batches-py').mkdir(parents=True); (d/'cifar-10-batches-py'/'data_batch_1').write_bytes(b'junk')

def _archive(d):
    d.mkdir(); (d/'cifar-10-python.tar.gz').write_bytes(b'junk')

@pytest.mark.parametrize('make,msg', [(None, 'is not a directory'),
                                      (_wrong_layout, 'found notes.txt, train/; expected torchvision'),
                                      (_corrupt, "data_batch_1 is corrupt (its md5 differs from torchvision's)"),
                                      (_archive, 'an archive: extract it')])
def test_bad_data_dir(make, msg, tmp_path, capsys):
    d = tmp_path/'data'
    if make: make(d)
    t0 = time.time()
    assert main(['--preset', 'quick', '--data-dir', str(d), '--out-dir', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err
    assert 'randsmooth-reproduce: error:' in err and msg in err, err
    assert time.time() - t0 < 20 and not (tmp_path/'o').exists()     # rejected before any work


@pytest.mark.parametrize('extra,msg', [(['--only', 'exp_nope'], 'unknown notebook(s) exp_nope; valid choices: exp_fig1a'),
                                       (['--data-dir', '/nonexistent/dir'], 'is not a directory')])
def test_reproduce_cli_bad_values(extra, msg, tmp_path, capsys):
    assert main(['--preset', 'smoke', '--out-dir', str(tmp_path/'o')] + extra) == 2
    err = capsys.readouterr().err
    assert 'randsmooth-reproduce: error:' in err and msg in err
    assert not (tmp_path/'o').exists()                   # rejected before any work


@pytest.mark.parametrize('argv,msg', [(['--preset', 'huge'], "invalid choice: 'huge'"), (['--seed', '-1'], '--seed must be >= 0'),
                                      (['--device', 'tpu'], "invalid choice: 'tpu'")])
def test_reproduce_cli_bad_args(argv, msg, capsys):
    "argparse errors return status 2 (the console script's exit code) and name the problem on stderr."
    assert main(argv) == 2 and msg in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# the committed results
def _committed(pattern):
    try: files = subprocess.run(['git', 'ls-files', 'paper_figures'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError): pytest.skip('not a git checkout')
    return [ROOT/f for f in files if re.search(pattern, f)]

def test_committed_results_hold_no_machine_paths():
    bad = re.compile(r'(?<![\w.~$])/(root|home|work|tmp|Users|private|var/folders|mnt)/')
    files = _committed(r'\.(json|ipynb|md|csv)$')
    assert files
    for p in files:
        t = p.read_text()
        assert str(ROOT) not in t and str(Path.home()) + '/' not in t and not bad.search(t), (p, (bad.search(t) or [''])[0])

def test_committed_theory_figures_are_current():
    "The theory figures in git were drawn from the current code (else `make reproduce` would redraw and dirty the tree)."
    if not _committed(r'theory/theory\.json$'): pytest.skip('no committed theory figures')
    assert R.theory_up_to_date(ROOT/'paper_figures'), \
        "paper_figures/theory/ is out of date with the theory code: run `make reproduce PRESET=smoke` and commit paper_figures/theory/"
