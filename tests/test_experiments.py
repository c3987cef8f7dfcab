"""Tests of the experiment notebooks nbs/exp_*.ipynb (papermill) and of the `randsmooth-reproduce` CLI.

Every notebook runs once at preset='smoke', in the dependency order of `reproduce.NOTEBOOKS`, sharing one model and
evaluation cache for the whole session (exp_fig1a trains the models the others reuse); then each artifact the
notebook promises is checked: tables (rows, columns, finite numbers, the paper's values), figures, JSON manifest.
`experiments.NOTEBOOK_PARAMS` reads each notebook's parameter names from its own `parameters` cell; the test checks that
reading against papermill's `inspect_notebook`, and bad values must fail fast with the validation message. The `randsmooth-reproduce` CLI is tested in tests/test_reproduce.py.

Set RANDSMOOTH_TEST_ALL_PARAMS=1 to run every bad parameter through papermill on every notebook (36 kernel starts,
about 3 minutes); by default each notebook gets one of them through papermill (all four kinds are covered) and the
full matrix runs in-process against the notebooks' own parameter cells.
"""
import csv
import json
import math
import os
import re
import time
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from randsmooth_nb.experiments import NOTEBOOK_PARAMS, PRESET_NAMES, check_params
from randsmooth_nb.reproduce import NOTEBOOKS

NBS = Path(__file__).resolve().parent.parent/'nbs'
EXP = sorted(p.stem for p in NBS.glob('exp_*.ipynb'))
SMOKE = dict(preset='smoke', device='cpu')

# ---------------------------------------------------------------------------------------------------------------
# The paper's numbers, typed in from Pinot et al. (2019), Tables 1 and 2 and Section 5.1 (independent of the library).
T1 = {'no noise': (0.958, 0.035, 0.034, 0.384),
      'gaussian 0.01': (0.954, 0.193, 0.294, 0.408), 'gaussian 0.5': (0.824, 0.448, 0.523, 0.587),
      'laplace 0.01': (0.955, 0.208, 0.313, 0.389), 'laplace 0.5': (0.846, 0.464, 0.494, 0.589)}
T2 = {'Madry et al.': (0.873, 0.456, 0.468), 'Normal 0.32': (0.876, 0.566, 0.512), 'Laplace 0.32': (0.891, 0.576, 0.502),
      'Normal 0.5': (0.824, 0.587, 0.489), 'Laplace 0.5': (0.846, 0.589, 0.479)}


# ---------------------------------------------------------------------------------------------------------------
# helpers
def read_csv(p):
    with open(p, newline='') as f: return list(csv.DictReader(f))

def num(v):
    "A CSV cell as a finite float (fails on '', 'nan', 'inf' or text)."
    assert v not in (None, ''), "empty value where a number is expected"
    x = float(v)
    assert math.isfinite(x), f"non-finite value {v!r}"
    return x

def opt(v): return None if v in (None, '') else float(v)

def check_table(out, stem, n_rows, cols, numeric=(), probs=(), caption_has=()):
    "Both files exist; the CSV has exactly `cols` and `n_rows` rows, finite numbers; the Markdown matches."
    csv_p, md_p = out/f'{stem}.csv', out/f'{stem}.md'
    assert csv_p.stat().st_size > 0 and md_p.stat().st_size > 0
    rows = read_csv(csv_p)
    assert list(rows[0]) == list(cols), f"{stem}.csv columns {list(rows[0])} != {list(cols)}"
    assert len(rows) == n_rows, f"{stem}.csv has {len(rows)} rows, expected {n_rows}"
    for r in rows:
        for c in numeric: num(r[c])
        for c in probs: assert 0 <= num(r[c]) <= 1, f"{stem}.{c}={r[c]} is not a probability"
    md = md_p.read_text().strip().splitlines()
    assert md[0].startswith('*') and 'preset: smoke' in md[0], f"{stem}.md caption: {md[0]!r}"
    for s in caption_has: assert s in md[0], f"{stem}.md caption lacks {s!r}: {md[0]!r}"
    header = [h.strip() for h in md[2].strip('|').split('|')]
    assert header == list(cols)
    body = [l for l in md[4:] if l.startswith('|')]
    assert len(body) == n_rows
    for l in body:
        cells = [c.strip() for c in l.strip('|').split('|')]
        assert len(cells) == len(cols)
        for c in numeric: assert cells[cols.index(c)] not in ('', 'nan', 'inf', 'None'), f"{stem}.md: empty {c}"
    return rows

def check_figure(out, stem):
    for ext in ('png', 'pdf'):
        p = out/f'{stem}.{ext}'
        assert p.exists() and p.stat().st_size > 1000, f"missing or empty figure {p.name}"
    assert (out/f'{stem}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (out/f'{stem}.pdf').read_bytes()[:5] == b'%PDF-'

def paper_close(v, expected):
    if expected is None: assert v in ('', None), f"paper value {v!r} where the paper reports none"
    else: assert v not in ('', None) and abs(float(v) - expected) < 1e-9, f"paper value {v!r} != {expected}"


# ---------------------------------------------------------------------------------------------------------------
# what each notebook promises
def _fig1a(out):
    cols = ['distribution', 'sd', 'accuracy', 'se', 'accuracy_vote', 'paper']
    rows = check_table(out, 'fig1a_accuracy_vs_sd', 5, cols, ['sd', 'accuracy', 'se', 'accuracy_vote'], ['accuracy', 'accuracy_vote'])
    assert [(r['distribution'], float(r['sd'])) for r in rows] == [('none', 0.0), ('gaussian', 0.1), ('gaussian', 0.5),
                                                                  ('laplace', 0.1), ('laplace', 0.5)]
    for r, p in zip(rows, (T1['no noise'][0], None, T1['gaussian 0.5'][0], None, T1['laplace 0.5'][0])): paper_close(r['paper'], p)
    check_figure(out, 'fig1a_accuracy_vs_sd')
    return ['fig1a_accuracy_vs_sd']

STRONGEST = 'strongest (PGD ∪ APGD-CE ∪ APGD-DLR)'
SANITY_COLS = ['notebook', 'check', 'attack', 'model', 'passed', 'value', 'threshold', 'detail']

def check_sanity(out, notebook_checks, models):
    "sanity.csv has exactly the promised columns, this notebook's checks for `models`, no check that could not run, and (a) passes."
    rows = read_csv(out/'sanity.csv')
    assert rows and list(rows[0]) == SANITY_COLS
    assert len({(r['notebook'], r['check'], r['attack'], r['model']) for r in rows}) == len(rows)   # one row per key after merging
    for r in rows:
        assert r['notebook'].startswith('exp_'), r                                                 # every row names its notebook
        assert r['passed'] in ('True', 'False') and not r['detail'].startswith('check could not run'), r
        num(r['value']); num(r['threshold'])
    for c in notebook_checks:
        assert {r['model'] for r in rows if r['check'] == c} >= set(models), (c, models)
    for r in rows:
        if r['check'] == 'a_breaks_undefended': assert r['passed'] == 'True', f"smoke budget fails check (a): {r}"

def _table1(out):
    cols = ['model', 'distribution', 'sd'] + [f"{c}{s}" for c in ('natural', 'ead', 'cw', 'pgd') for s in ('', '_se', '_paper')]
    cols += [STRONGEST, 'strongest_se']
    acc = [c for c in cols if c.split('_')[0] in ('natural', 'ead', 'cw', 'pgd', STRONGEST, 'strongest') and not c.endswith('_paper')]
    rows = check_table(out, 'table1', 5, cols, ['sd'] + acc, [c for c in acc if not c.endswith('_se')], ['EoT 2'])
    scols = ['model', 'n', 'acc_expected', 'se_expected', 'acc_single', 'se_single', 'acc_vote', 'se_vote', 'settings']
    st = check_table(out, 'table1_strongest', 5, scols, scols[1:-1], ['acc_expected', 'acc_single', 'acc_vote'])
    assert [json.loads(s['settings'])[1]['kind'] for s in st] == ['apgd'] * 5
    check_sanity(out, ['a_breaks_undefended', 'b_eps_monotone', 'b_eps_one', 'c_steps', 'd_loss_rises'], ['no noise'])
    check_sanity(out, ['b_eps_monotone', 'b_eps_one', 'c_steps', 'd_loss_rises'], list(T1))
    check_figure(out, 'table1_sanity_eps'); check_figure(out, 'table1_sanity_loss')
    assert [r['model'] for r in rows] == list(T1)
    for r in rows:
        for c, p in zip(('natural', 'ead', 'cw', 'pgd'), T1[r['model']]): paper_close(r[c + '_paper'], p)
    dcols = ['model', 'attack', 'n', 'acc_single', 'se_single', 'acc_vote', 'se_vote', 'median_l1', 'median_l2', 'median_linf', 'settings']
    det = check_table(out, 'table1_details', 20, dcols, dcols[2:-1], ['acc_single', 'acc_vote'])
    assert {(d['model'], d['attack']) for d in det} == {(m, a) for m in T1 for a in ('natural', 'ead', 'cw', 'pgd')}
    for d in det:
        s = json.loads(d['settings'])
        if d['attack'] == 'natural': assert s == {} and num(d['median_l2']) == 0
        else: assert s['kind'] == d['attack'] and s['eot'] == (1 if d['model'] == 'no noise' else 2)
        if d['attack'] == 'pgd': assert num(d['median_linf']) <= s['eps'] + 1e-6      # PGD stays in its eps-ball
        assert int(num(d['n'])) == (64 if d['attack'] == 'natural' else 16)
    check_figure(out, 'table1')
    return ['table1', 'table1_details', 'table1_strongest', 'table1_min_norm']

def _table2(out):
    models = ['Madry et al.', 'Normal 0.32', 'Laplace 0.32', 'Normal 0.5', 'Laplace 0.5']    # the paper's column order
    cols = ['attack'] + [f"{m}{s}" for m in models for s in ('', ' se', ' (paper)')]
    rows = check_table(out, 'table2', 4, cols, [c for c in cols[1:] if not c.endswith('(paper)')], models)
    assert [r['attack'] for r in rows] == ['-', 'l_inf PGD-4', 'l2 C&W-30', STRONGEST]
    for i, r in enumerate(rows):
        for m in models: paper_close(r[m + ' (paper)'], T2[m][i] if i < 3 else None)
    check_figure(out, 'table2'); check_figure(out, 'table2_sanity_eps')
    check_sanity(out, ['b_eps_monotone', 'b_eps_one', 'd_loss_rises'], ['Madry et al.'])
    check_sanity(out, ['c_steps'], models)
    return ['table2']

def _fig1bc(out):
    ga = [f"guaranteed@{a}" for a in ('0.05', '0.1', '0.25', '0.5')]
    cols = ['distribution', 'sd', 'norm', 'accuracy', 'mean_exp_neg_entropy'] + ga + ['largest_alpha_with_bound_above_0']
    rows = check_table(out, 'fig1bc_guaranteed_accuracy', 4, cols, ['sd', 'accuracy', 'mean_exp_neg_entropy', *ga,
                       'largest_alpha_with_bound_above_0'], ['accuracy', 'mean_exp_neg_entropy', *ga])
    assert [(r['distribution'], float(r['sd']), r['norm']) for r in rows] == [
        ('gaussian', 0.1, 'l2'), ('gaussian', 0.5, 'l2'), ('laplace', 0.1, 'l1'), ('laplace', 0.5, 'l1')]
    for r in rows:
        g = [num(r[c]) for c in ga]
        assert all(a >= b - 1e-12 for a, b in zip(g, g[1:])), f"guarantee not decreasing in alpha: {g}"
        assert g[0] <= num(r['accuracy']) + 1e-12           # a guarantee never exceeds the accuracy itself
        assert 0 <= num(r['largest_alpha_with_bound_above_0']) <= 1
    check_figure(out, 'fig1b_guaranteed_gaussian'); check_figure(out, 'fig1c_guaranteed_laplace')
    check_sanity(out, ['e_guarantee_below_attack'], ['gaussian 0.1', 'gaussian 0.5', 'laplace 0.1', 'laplace 0.5'])
    return ['fig1bc_guaranteed_accuracy']

def _eot_sweep(out):
    cols = ['model', 'attack', 'eot', 'accuracy', 'se', 'accuracy_vote', 'theorem2_guaranteed', 'above_guarantee']
    rows = check_table(out, 'eot_sweep', 12, cols, ['eot', 'accuracy', 'se', 'accuracy_vote', 'theorem2_guaranteed'],
                       ['accuracy', 'accuracy_vote', 'theorem2_guaranteed'])
    assert sorted({int(r['eot']) for r in rows}) == [1, 2, 4]
    assert {r['model'] for r in rows} == {'gaussian 0.5', 'laplace 0.5'}
    for r in rows:
        assert r['above_guarantee'] in ('True', 'False')
        assert (r['above_guarantee'] == 'True') == (num(r['accuracy']) + 2 * num(r['se']) >= num(r['theorem2_guaranteed']))
        if 'linf' in r['attack']: assert num(r['theorem2_guaranteed']) == 0     # eps*sqrt(d) ~ 1.66 here: vacuous
    check_figure(out, 'eot_sweep')
    check_sanity(out, ['c_eot'], ['gaussian 0.5', 'laplace 0.5'])
    return ['eot_sweep']

def _certificates(out):
    cols = ['model', 'norm', 'radius', 'cohen', 'pixeldp', 'theorem3', 'cohen_paper']
    rows = check_table(out, 'certificates', 8, cols, ['radius', 'cohen', 'pixeldp', 'theorem3'], ['cohen', 'pixeldp', 'theorem3'])
    assert [(r['model'], r['norm'], float(r['radius'])) for r in rows] == [
        (m, n, rad) for m, n in (('gaussian 0.5', 'l2'), ('laplace 0.5', 'l1')) for rad in (0.0, 0.25, 0.5, 1.0)]
    for m in ('gaussian 0.5', 'laplace 0.5'):
        for c in ('cohen', 'pixeldp', 'theorem3'):
            v = [num(r[c]) for r in rows if r['model'] == m]
            assert all(a >= b - 1e-12 for a, b in zip(v, v[1:])), f"certified accuracy grows with the radius: {m} {c} {v}"
    # Cohen et al.'s published values (their sigma 0.25 = our sd 0.5; radii doubled), Gaussian rows only
    cohen = {0.0: None, 0.25: None, 0.5: 0.60, 1.0: 0.43}
    for r in rows: paper_close(r['cohen_paper'], cohen[float(r['radius'])] if r['model'].startswith('gaussian') else None)
    check_figure(out, 'certificates')
    return ['certificates']

def _first_layer(out):
    cols = ['model', 'noise_at', 'natural', 'natural_se', 'pgd', 'pgd_se', 'mean_exp_neg_entropy', 'guaranteed@0.1', 'guaranteed@0.25']
    rows = check_table(out, 'first_layer', 4, cols, cols[2:], ['natural', 'pgd', 'mean_exp_neg_entropy', 'guaranteed@0.1', 'guaranteed@0.25'])
    assert [(r['model'], r['noise_at']) for r in rows] == [('gaussian 0.5', 'first_layer'), ('gaussian 0.5', 'input'),
                                                           ('laplace 0.5', 'first_layer'), ('laplace 0.5', 'input')]
    for r in rows: assert num(r['guaranteed@0.25']) <= num(r['guaranteed@0.1']) + 1e-12
    check_figure(out, 'first_layer_guaranteed')
    return ['first_layer']

def _cifar100(out):
    cols = ['model', 'natural', 'natural_se', 'natural_paper', 'pgd', 'pgd_se', 'cw', 'cw_se']
    rows = check_table(out, 'cifar100', 3, cols, ['natural', 'natural_se', 'pgd', 'pgd_se', 'cw', 'cw_se'], ['natural', 'pgd', 'cw'])
    assert [r['model'] for r in rows] == ['no noise', 'gaussian 0.5', 'laplace 0.5']
    for r, p in zip(rows, (0.791, None, None)): paper_close(r['natural_paper'], p)
    check_figure(out, 'cifar100')
    return ['cifar100']

def _imagenet(out):
    cols = ['model', 'natural_top1', 'natural_se', 'natural_paper', 'pgd_top1', 'pgd_se']
    rows = check_table(out, 'imagenet', 2, cols, ['natural_top1', 'natural_se', 'natural_paper', 'pgd_top1', 'pgd_se'],
                       ['natural_top1', 'pgd_top1'])
    assert [r['model'] for r in rows] == ['gaussian 0.5', 'laplace 0.5']
    for r in rows: paper_close(r['natural_paper'], 0.80)
    assert not list(out.glob('imagenet*.png'))      # this notebook draws no figure
    return ['imagenet']

CHECKS = {'exp_fig1a': _fig1a, 'exp_table1': _table1, 'exp_table2': _table2, 'exp_fig1bc': _fig1bc,
          'exp_eot_sweep': _eot_sweep, 'exp_certificates': _certificates, 'exp_first_layer': _first_layer,
          'exp_cifar100': _cifar100, 'exp_imagenet': _imagenet}
SANITY_WRITERS = ('exp_table1', 'exp_table2', 'exp_fig1bc', 'exp_eot_sweep')    # notebooks that merge rows into sanity.csv
FIGURES = {'exp_fig1a': ['fig1a_accuracy_vs_sd'], 'exp_table1': ['table1', 'table1_sanity_eps', 'table1_sanity_loss', 'table1_min_norm'],
           'exp_table2': ['table2', 'table2_sanity_eps'],
           'exp_fig1bc': ['fig1b_guaranteed_gaussian', 'fig1c_guaranteed_laplace'], 'exp_eot_sweep': ['eot_sweep'],
           'exp_certificates': ['certificates'], 'exp_first_layer': ['first_layer_guaranteed'], 'exp_cifar100': ['cifar100'],
           'exp_imagenet': []}


# ---------------------------------------------------------------------------------------------------------------
# fixtures: one shared cache, every notebook run once in dependency order
@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory): return tmp_path_factory.mktemp('rs_cache')

@pytest.fixture(scope='session')
def smoke_runs(tmp_path_factory, cache_dir):
    "Execute every exp notebook at preset smoke, in `NOTEBOOKS` order; name -> (out_dir, error or None, seconds)."
    root = tmp_path_factory.mktemp('smoke')
    pf, res = root/'pf', {}
    for name in NOTEBOOKS:
        t0, err = time.time(), None
        try:
            pm.execute_notebook(str(NBS/f'{name}.ipynb'), str(root/f'{name}.out.ipynb'), kernel_name='python3',
                                parameters=dict(SMOKE, out_dir=str(pf), cache_dir=str(cache_dir)),
                                progress_bar=False, cwd=str(root))
        except Exception as e: err = e
        res[name] = (pf/'smoke', err, time.time() - t0)
    print('\nsmoke run times: ' + ', '.join(f"{k} {v[2]:.0f} s" for k, v in res.items()))
    return res


def test_notebook_list_matches_reproduce():
    "Every exp notebook is run by the CLI, and has a parameter spec; no spec without a notebook."
    assert sorted(NOTEBOOKS) == EXP == sorted(NOTEBOOK_PARAMS) == sorted(CHECKS)
    assert NOTEBOOKS[0] == 'exp_fig1a'                  # trains the models the others reuse


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_smoke_artifacts(name, smoke_runs):
    out, err, secs = smoke_runs[name]
    if err is not None: pytest.fail(f"{name} failed at preset smoke after {secs:.0f} s:\n{str(err)[-3000:]}")
    stems = CHECKS[name](out)
    m = json.loads((out/f'{name}.json').read_text())
    for k in ('config', 'seed', 'versions', 'git', 'wall_time_s', 'status', 'hardware', 'artifacts'): assert k in m, k
    assert m['status'] == 'ok' and m['seed'] == 0
    assert m['config']['notebook'] == name and m['config']['params']['preset'] == 'smoke'
    assert m['config']['resolved']['arch'] == 'tiny' and m['config']['resolved']['dataset'] == 'synthetic'
    assert isinstance(m['wall_time_s'], (int, float)) and 0 < m['wall_time_s'] <= secs + 1
    assert m['versions'].get('torch') and m['versions'].get('python')
    if m['git'] is not None: assert re.fullmatch(r'[0-9a-f]{40}', m['git']['commit'])
    o = out.resolve()
    expected = {o/f'{s}.{e}' for s in stems for e in ('csv', 'md')} | {o/f'{s}.{e}' for s in FIGURES[name] for e in ('png', 'pdf')}
    if name in SANITY_WRITERS: expected.add(o/'sanity.csv')
    got = {Path(a).resolve() for a in m['artifacts']}
    assert got == expected, got ^ expected
    assert all(Path(a).stat().st_size > 0 for a in m['artifacts'])
    assert m['data'] == 'synthetic' and m['models']
    for v in m['models'].values(): assert v['status'] in ('trained', 'finished', 'cached') and v['key']


# ---------------------------------------------------------------------------------------------------------------
# parameters
@pytest.mark.parametrize('name', EXP)
def test_parameters_match_spec(name):
    nb = nbformat.read(NBS/f'{name}.ipynb', as_version=4)
    assert nb.metadata['kernelspec']['name'] == 'python3'
    params = pm.inspect_notebook(str(NBS/f'{name}.ipynb'))
    assert tuple(params) == NOTEBOOK_PARAMS[name]
    for p in params.values(): assert p['help'].strip(), f"parameter {p['name']} of {name} has no help string"
    assert params['preset']['default'] == '"paper"'
    assert all(c in params['preset']['help'] for c in PRESET_NAMES)
    tagged = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1


@pytest.mark.parametrize('name', EXP)
def test_nbdev_skips_experiments(name):
    "The first cell is raw YAML front matter with skip_exec: true, and nbdev's own parser reads it so."
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    import yaml
    nb = nbformat.read(NBS/f'{name}.ipynb', as_version=4)
    c0 = nb.cells[0]
    assert c0.cell_type == 'raw' and c0.source.startswith('---')
    assert yaml.safe_load(c0.source.strip().strip('-')) == {'skip_exec': True}
    fm = NBProcessor(NBS/f'{name}.ipynb', procs=FrontmatterProc, process=True).nb.frontmatter_
    assert fm.get('skip_exec') is True


def _bad_cases(name):
    sd_key = 'sds' if 'sds' in NOTEBOOK_PARAMS[name] else 'sd'
    return {'sd': ({sd_key: [-1] if sd_key == 'sds' else -1}, f"{sd_key} must be > 0"),
            'preset': ({'preset': 'huge'}, "valid choices: paper, quick, smoke"),
            'dist': ({'dist': 'cauchy'}, "valid choices: both, gaussian, laplace"),
            'unknown': ({'sdd': 1}, "unknown parameter")}

KINDS = ('sd', 'preset', 'dist', 'unknown')
ALL = os.environ.get('RANDSMOOTH_TEST_ALL_PARAMS', '') not in ('', '0')
# each kernel start costs ~5 s here: by default every kind of bad value once through papermill (sd twice: `sd` and
# exp_certificates' `sds`); the in-process test above covers every notebook x kind
PM_CASES = [(n, k) for n in NOTEBOOKS for k in KINDS] if ALL else [
    ('exp_fig1a', 'sd'), ('exp_certificates', 'sd'), ('exp_table1', 'preset'), ('exp_fig1bc', 'dist'), ('exp_imagenet', 'unknown')]


@pytest.mark.parametrize('name', EXP)
@pytest.mark.parametrize('kind', KINDS)
def test_bad_parameter_in_process(name, kind, tmp_path):
    "The notebook's own import + parameters cells, with one bad value injected, fail in check_params."
    code = [c.source for c in nbformat.read(NBS/f'{name}.ipynb', as_version=4).cells if c.cell_type == 'code']
    assert 'check_params(' in code[2] and '_names_before_params' in code[0]
    g = {}
    exec(code[0], g); exec(code[1], g)
    g.update(SMOKE, out_dir=str(tmp_path), cache_dir=str(tmp_path))
    assert check_params(name, dict(g), g['_names_before_params'])['preset'] == 'smoke'    # good values pass
    over, msg = _bad_cases(name)[kind]
    g.update(over)
    with pytest.raises(ValueError, match=re.escape(msg)): check_params(name, g, g['_names_before_params'])


@pytest.mark.parametrize('name,kind', PM_CASES)
def test_bad_parameter_papermill(name, kind, tmp_path):
    "Through papermill: the run fails in the validation cell, with the message, within seconds."
    over, msg = _bad_cases(name)[kind]
    t0 = time.time()
    with pytest.raises(pm.PapermillExecutionError) as ei:
        pm.execute_notebook(str(NBS/f'{name}.ipynb'), str(tmp_path/'out.ipynb'), kernel_name='python3', progress_bar=False,
                            parameters=dict(SMOKE, out_dir=str(tmp_path/'pf'), cache_dir=str(tmp_path/'cache'), **over),
                            cwd=str(tmp_path))
    assert time.time() - t0 < 30
    e = ei.value
    assert e.ename == 'ValueError' and msg in e.evalue, e.evalue
    assert 'check_params(' in str(e)                     # failed in the validation cell ...
    assert not (tmp_path/'cache').exists() and not (tmp_path/'pf').exists()     # ... before any work


# The reproduce CLI (run, resume, --force, no change on a second run, bad arguments) is tested in tests/test_reproduce.py.


def test_table1_evaluates_the_sds_its_shards_cover():
    "exp_table1's own list of noise sds is `experiments.TABLE1_SDS`, which its shards (`shard_settings`) are made from."
    import ast
    from randsmooth_nb.experiments import TABLE1_SDS
    src = '\n'.join(''.join(c['source']) for c in nbformat.read(NBS/'exp_table1.ipynb', as_version=4).cells if c.cell_type == 'code')
    m = re.search(r"ex\.settings\(([^)]*\)?)\)", src)
    assert m, "exp_table1 no longer calls ex.settings(...)"
    assert m.group(1) == 'TABLE1_SDS' or ast.literal_eval(m.group(1)) == TABLE1_SDS
