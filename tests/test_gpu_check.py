"""The prepared GPU check runs end to end on the CPU: `bash benchmarks/gpu_check.sh --dry-run` (its install step is
skipped here, where the package is importable) prints its four sections without an error and writes its JSON."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path/'gpu_check.json'
    env = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1'}
    t = time.time()
    r = subprocess.run(['bash', str(ROOT/'benchmarks'/'gpu_check.sh'), '--dry-run', '--threads', '1', '--json', str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    wall = time.time() - t
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    for head in ('== (a) training throughput ==', '== (b) EoT-PGD against torchattacks EOTPGD ==',
                 '== (c) Monte Carlo draws/s and peak GPU memory ==', '== (d) projected hours of every notebook (plan) =='):
        assert head in log, head
    assert 'RATIO ours / bare' in log and 'RATIO time ours (bf16) / torchattacks' in log and 'draws_per_s' in log
    assert "Plan for preset 'smoke'" in log and 'whole suite (smoke preset)' in log
    assert 'installing the project' not in log                              # importable already: no install here
    res = json.loads(out.read_text())
    assert res['dry_run'] and res['device'] == 'cpu'
    for k in 'abcd': assert 'error' not in res[k], res[k]
    assert res['a']['rows'][0]['img_per_s'] > 0 and res['b']['ratio_bf16_over_torchattacks'] > 0
    assert all(row['draws_per_s'] > 0 for row in res['c']['rows'])
    assert res['d']['suite_hours'] > 0 and set(res['d']['hours']) == {r['notebook'] for r in res['d']['plan']['rows']}
    assert wall < 60, f"the dry run took {wall:.0f} s (goal: under a minute)"
