"""Tests of `randsmooth-reproduce --workers N` and `--gpus IDS`: several experiment notebooks side by side.

- Two smoke notebooks with two workers on the CPU (one process each, each with its own fresh cache) finish `ok`,
  side by side (their papermill start and end times overlap), and write the same tables as a run one after the other.
  `exp_eot_sweep` merges rows into `sanity.csv`, so the file that several notebooks share is compared too.
- `--gpus` without a GPU is simulated in this process only (torch.cuda patched): each notebook process sees exactly
  its GPU in CUDA_VISIBLE_DEVICES, and a notebook that fails while the other is still running leaves none of its
  files (they were staged), while the other's results are published.
- Two separate `randsmooth-reproduce` processes on one results folder (as Slurm array tasks would be) both keep
  their entries in status.json (it is merged under a lock, not overwritten).
- Ctrl-C to the parent of a two-worker run interrupts every notebook process (each keeps its `.failed.ipynb`), leaves
  no process behind and publishes nothing.
- Device ids that this machine does not have are rejected before any work, with the valid ids (exit 2).
"""
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

import randsmooth_nb.reproduce as R
from randsmooth_nb.reproduce import main
from test_reproduce import fake_notebook, FAILING

SMOKE_PAIR = 'exp_eot_sweep,exp_certificates'   # independent, fast at smoke, and eot_sweep merges into sanity.csv


def _run(base: Path, *extra) -> Path:
    out = base/'paper_figures'
    assert main(['--preset', 'smoke', '--only', SMOKE_PAIR, '--out-dir', str(out), '--cache-dir', str(base/'cache'),
                 '--device', 'cpu', *extra]) == 0
    return out


def _window(executed: Path) -> tuple:
    pm = nbformat.read(executed, as_version=4).metadata.papermill
    return datetime.fromisoformat(pm.start_time), datetime.fromisoformat(pm.end_time)


def test_two_workers_match_sequential(tmp_path, capsys):
    seq = _run(tmp_path/'seq'); capsys.readouterr()
    par = _run(tmp_path/'par', '--workers', '2')
    log = capsys.readouterr().out
    assert '2 notebooks at a time' in log and '[worker 1]' in log and '[worker 2]' in log
    assert log.count(' ok in ') == 2 and 'ran 2 (2 ok, 0 failed)' in log.strip().splitlines()[-1]
    st = json.loads((par/'runs'/'smoke'/'status.json').read_text())
    assert {n: s['status'] for n, s in st.items()} == {'exp_eot_sweep': 'ok', 'exp_certificates': 'ok'}
    (a0, a1), (b0, b1) = (_window(par/'runs'/'smoke'/f'{n}.ipynb') for n in SMOKE_PAIR.split(','))
    assert a0 < b1 and b0 < a1, 'the two notebooks did not run side by side'
    # the results: every table (CSV, Markdown) and the verdict as in the sequential run; manifests and the index
    # hold wall times, so only their lists of artifacts are compared
    files = lambda d: sorted(p.name for p in (d/'smoke').iterdir() if p.suffix in ('.csv', '.md') and p.name != 'README.md')
    assert files(par) == files(seq) and 'sanity.csv' in files(par) and 'certificates.csv' in files(par)
    for name in files(par): assert (par/'smoke'/name).read_text() == (seq/'smoke'/name).read_text(), name
    for n in SMOKE_PAIR.split(','):
        art = lambda d: json.loads((d/'smoke'/f'{n}.json').read_text())['artifacts']
        assert art(par) == art(seq), n
    idx = (par/'smoke'/'README.md').read_text()
    assert '| exp_eot_sweep | ok |' in idx and '| exp_certificates | ok |' in idx


SLOW_OK = """import json, os, time
from pathlib import Path
time.sleep(4)                       # still running when the other notebook fails
d = Path(out_dir)/preset
(d/'table1.md').write_text(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset') + '\\n')
json.dump({'wall_time_s': 4.0, 'artifacts': [str(d/'table1.md')]}, open(d/'exp_table1.json', 'w'))"""

FAILING_GPU = "import os\nprint('visible: ' + os.environ['CUDA_VISIBLE_DEVICES'])\n" + FAILING


@pytest.fixture
def two_fake_gpus(monkeypatch):
    "This process sees two CUDA devices (the notebook processes are plain CPU processes)."
    monkeypatch.setattr('torch.cuda.is_available', lambda: True)
    monkeypatch.setattr('torch.cuda.device_count', lambda: 2)
    monkeypatch.setattr(R, 'hardware_label', lambda device=None: 'GPU: fake (x2)')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)


def test_gpus_one_process_each_and_a_failure_spares_the_other(tmp_path, two_fake_gpus, capsys):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    fake_notebook(nbs/'exp_fig1a.ipynb', FAILING_GPU); fake_notebook(nbs/'exp_table1.ipynb', SLOW_OK)
    out = tmp_path/'paper_figures'; res = out/'smoke'; res.mkdir(parents=True)
    (res/'table1.md').write_text('old\n')
    code = main(['--preset', 'smoke', '--only', 'exp_fig1a,exp_table1', '--out-dir', str(out), '--nbs-dir', str(nbs), '--gpus', '1,0'])
    log = capsys.readouterr().out
    assert code == 1 and 'GPUs 1,0, a notebook on each' in log
    assert 'exp_fig1a         running ... [GPU 1]' in log and 'exp_table1        running ... [GPU 0]' in log
    assert log.index('exp_fig1a         FAILED') < log.index('exp_table1        ok in')   # it failed while the other ran
    assert (res/'table1.md').read_text() == '0\n'            # the other's result, from its own GPU, is kept
    assert not (res/'new_partial.csv').exists()               # the failed one's files were never published
    assert 'visible: 1' in (out/'runs'/'smoke'/'exp_fig1a.failed.ipynb').read_text()
    st = json.loads((out/'runs'/'smoke'/'status.json').read_text())
    assert st['exp_fig1a']['status'] == 'failed' and 'boom' in st['exp_fig1a']['error'] and st['exp_table1']['status'] == 'ok'
    assert '| exp_table1 | ok |' in (res/'README.md').read_text()


def test_two_separate_runs_share_one_results_folder(tmp_path):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    for n in ('exp_fig1a', 'exp_table1'):
        fake_notebook(nbs/f'{n}.ipynb', "import time\nfrom pathlib import Path\ntime.sleep(5)\n"
                                        f"(Path(out_dir)/preset/'{n}.md').write_text('{n}\\n')")
    out = tmp_path/'paper_figures'; R.theory_figures(out)     # drawn once here, not by both
    cmd = lambda n: [sys.executable, '-c', 'import sys; from randsmooth_nb.reproduce import main; sys.exit(main(sys.argv[1:]))',
                     '--preset', 'smoke', '--only', n, '--out-dir', str(out), '--nbs-dir', str(nbs)]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    procs = [subprocess.Popen(cmd(n), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for n in ('exp_fig1a', 'exp_table1')]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    st = json.loads((out/'runs'/'smoke'/'status.json').read_text())
    assert {n: s['status'] for n, s in st.items()} == {'exp_fig1a': 'ok', 'exp_table1': 'ok'}
    assert sorted(p.name for p in (out/'smoke').glob('exp_*.md')) == ['exp_fig1a.md', 'exp_table1.md']
    (a0, a1), (b0, b1) = (_window(out/'runs'/'smoke'/f'{n}.ipynb') for n in ('exp_fig1a', 'exp_table1'))
    assert a0 < b1 and b0 < a1, 'the two runs did not overlap'


def _marked(marker: str) -> list:
    "PIDs of the processes whose environment holds `marker` (Linux /proc)."
    pids = []
    for d in Path('/proc').iterdir():
        try:
            if d.name.isdigit() and marker.encode() in (d/'environ').read_bytes(): pids.append(int(d.name))
        except OSError: pass
    return pids


@pytest.mark.skipif(not Path('/proc/self/environ').exists(), reason='needs /proc')
def test_interrupt_stops_every_notebook_process(tmp_path):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    for n in ('exp_fig1a', 'exp_table1'):
        fake_notebook(nbs/f'{n}.ipynb', "import time\nfrom pathlib import Path\n"
                                        f"(Path(out_dir)/preset/'{n}.md').write_text('partial')\ntime.sleep(120)")
    out = tmp_path/'paper_figures'; R.theory_figures(out)
    marker = f'RANDSMOOTH_TEST_MARK={tmp_path.name}'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', marker.split('=')[0]: marker.split('=')[1]}
    p = subprocess.Popen([sys.executable, '-c', 'import sys; from randsmooth_nb.reproduce import main; sys.exit(main(sys.argv[1:]))',
                          '--preset', 'smoke', '--only', 'exp_fig1a,exp_table1', '--out-dir', str(out), '--nbs-dir', str(nbs),
                          '--workers', '2'], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # Ctrl-C reaches it even when this
    running = out/'runs'/'smoke'                                      # test runs in a background job, which ignores SIGINT
    t0 = time.time()               # both kernels are executing once papermill has written both notebooks' running copies
    while len(list(running.glob('.*.running.ipynb'))) < 2 and time.time() - t0 < 120: time.sleep(0.5)
    time.sleep(2); p.send_signal(signal.SIGINT)                      # Ctrl-C to the parent alone
    assert p.wait(60) != 0
    t0 = time.time()
    while _marked(marker) and time.time() - t0 < 30: time.sleep(0.5)
    assert not _marked(marker), 'notebook processes or kernels outlived the interrupted run'
    assert not list((out/'smoke').glob('exp_*.md'))                 # nothing staged was published
    assert sorted(q.name for q in running.glob('*.failed.ipynb')) == ['exp_fig1a.failed.ipynb', 'exp_table1.failed.ipynb']


@pytest.mark.parametrize('gpus,count,msg', [('0,2', 2, '--gpus 0,2: no CUDA device 2; valid ids: 0, 1'),
                                            ('0', 0, 'this machine has no CUDA device'),
                                            ('0,0', 2, 'names device 0 twice'),
                                            ('gpu0', 2, 'comma-separated CUDA device ids')])
def test_bad_gpus_exit_2_before_any_work(gpus, count, msg, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('torch.cuda.is_available', lambda: count > 0)
    monkeypatch.setattr('torch.cuda.device_count', lambda: count)
    assert main(['--preset', 'smoke', '--gpus', gpus, '--out-dir', str(tmp_path/'o')]) == 2
    err = capsys.readouterr().err
    assert 'randsmooth-reproduce: error:' in err and msg in err, err
    assert not (tmp_path/'o').exists()


def test_bad_workers(tmp_path, capsys):
    assert main(['--preset', 'smoke', '--workers', '0', '--out-dir', str(tmp_path/'o')]) == 2
    assert '--workers must be >= 1' in capsys.readouterr().err and not (tmp_path/'o').exists()


def test_table1_shards_fill_the_cache_and_change_nothing(tmp_path, capsys, monkeypatch):
    "With two workers, Table 1 runs as one shard per (dist, sd) first, then on their cached evaluations: the same table."
    monkeypatch.setenv('OMP_NUM_THREADS', '1')     # one thread in every notebook process: the same sums, bit for bit, in both runs
    runs = {}
    for kind, extra in (('seq', []), ('par', ['--workers', '2'])):
        out = tmp_path/kind/'paper_figures'
        assert main(['--preset', 'smoke', '--only', 'exp_table1', '--out-dir', str(out), '--cache-dir', str(tmp_path/kind/'cache'),
                     '--device', 'cpu', *extra]) == 0
        runs[kind] = (out, capsys.readouterr().out)
    (seq, log_seq), (par, log) = runs['seq'], runs['par']
    assert 'shard gaussian' not in log_seq
    for s in ('gaussian 0.01', 'gaussian 0.5', 'laplace 0.01', 'laplace 0.5'):   # experiments.TABLE1_SDS
        assert f'shard {s} ok in' in log, (s, log)
    assert log.index('shard laplace 0.5 ok in') < log.index('exp_table1        ok in')   # the notebook waits for its shards
    st = json.loads((par/'runs'/'smoke'/'status.json').read_text())
    assert list(st) == ['exp_table1'] and st['exp_table1']['status'] == 'ok'        # shards leave no entry and no files
    assert sorted(p.name for p in (par/'runs'/'smoke').iterdir()) == sorted(p.name for p in (seq/'runs'/'smoke').iterdir())
    for name in ('table1.csv', 'table1_strongest.csv', 'sanity.csv'):
        assert (par/'smoke'/name).read_text() == (seq/'smoke'/name).read_text(), name
