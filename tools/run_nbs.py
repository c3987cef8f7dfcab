"""Execute the library notebooks in place, so that a reader on GitHub sees their figures and printed checks.

    python tools/run_nbs.py [NB ...]     # execute (default: every library notebook, nbs/[0-9]*.ipynb and nbs/index.ipynb)
    python tools/run_nbs.py --check      # exit 1 unless every committed library notebook carries its outputs

Execution (`make nbs-run`) uses execnb, as `nbdev_test` does: cells flagged with one of settings.ini's `tst_flags`
(`#| slow`, `#| gpu`, `#| notest`) are skipped and keep no output; every other code cell's old outputs are replaced.
Seeds are set before the first cell. Figures are stored as PNG.

`--check` (`make test`) does not execute anything. It fails when a code cell that must print something has no output:
a cell whose last statement is a bare expression other than a call of `test_*`/`assert`-style helpers, or that calls
`print`, `show_doc` or `display`; and when an image output is larger than 150 KB. The experiment notebooks
(`nbs/exp_*.ipynb`) are not checked: their executed copies are the results in `paper_figures/runs/`.
"""
from __future__ import annotations
import ast, base64, configparser, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'
MAX_IMAGE_BYTES = 150_000
SEED_CODE = "import random as _r, numpy as _np, torch as _t; _r.seed(0); _np.random.seed(0); _t.manual_seed(0)"
QUIET_CALLS = ('test_', 'assert', 'nbdev.', 'plt.close', 'torch.manual_seed', 'np.random.seed', 'random.seed')


def library_notebooks() -> list:
    return sorted(NBS.glob('[0-9]*.ipynb')) + [NBS/'index.ipynb']


def skip_flags() -> set:
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    return set(cfg['DEFAULT'].get('tst_flags', '').split())


def flags(src:str) -> set:
    out = set()
    for line in src.splitlines():
        if line.startswith('#|'): out.update(w for w in line[2:].replace(',', ' ').split())
    return out


def _text(v) -> str: return ''.join(v) if isinstance(v, list) else str(v)


def run(path:Path):
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb, skip = read_nb(path), skip_flags()
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = []
    sh, cwd = CaptureShell(mpl_format='png'), os.getcwd()
    os.chdir(path.parent)
    try:
        sh.run(SEED_CODE)
        sh.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or bool(flags(c.source) & skip))
    finally: os.chdir(cwd)
    for c in nb.cells:                                       # a returned figure is also shown by the inline backend
        if c.cell_type != 'code': continue
        seen, outs = set(), []
        for o in c.outputs:
            key = repr(o.get('data', {}).get('image/png'))
            if 'image/png' in o.get('data', {}) and key in seen: continue
            seen.add(key); outs.append(o)
        c.outputs = outs
    write_nb(nb, path)


def must_print(src:str) -> bool:
    "Whether a code cell's source must leave an output when run (see the module docstring)."
    body = '\n'.join(l for l in src.splitlines() if not l.startswith('#|'))
    try: tree = ast.parse(body)
    except SyntaxError: return False
    if not tree.body: return False
    for stmt in tree.body:                                   # top-level code only: a `print` inside a `def` runs later
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ('print', 'show_doc', 'display'):
                return True
    last = tree.body[-1]
    if not isinstance(last, ast.Expr) or body.rstrip().endswith(';'): return False
    v = last.value
    if isinstance(v, ast.Constant): return False            # a bare string: documentation
    if isinstance(v, ast.Call) and ast.unparse(v.func).startswith(QUIET_CALLS): return False
    return True


def check(paths) -> list:
    import json
    problems, skip = [], skip_flags()
    for p in paths:
        nb = json.loads(p.read_text())
        for i, c in enumerate(nb['cells']):
            if c['cell_type'] != 'code': continue
            src, outs = _text(c['source']), c.get('outputs', [])
            if flags(src) & skip: continue
            if must_print(src) and not outs:
                problems.append(f"{p.relative_to(ROOT)} cell {i} ({c.get('id', '?')}): no output (run `make nbs-run`)")
            for o in outs:
                png = o.get('data', {}).get('image/png')
                if png and len(base64.b64decode(_text(png))) > MAX_IMAGE_BYTES:
                    problems.append(f"{p.relative_to(ROOT)} cell {i}: image over {MAX_IMAGE_BYTES // 1000} KB")
    return problems


def main(argv) -> int:
    args = [a for a in argv if not a.startswith('--')]
    paths = [Path(a).resolve() for a in args] or library_notebooks()
    missing = [str(p) for p in paths if not p.exists()]
    if missing: print(f"no such notebook: {', '.join(missing)}"); return 2
    if '--check' in argv:
        problems = check(paths)
        for pr in problems: print('FAIL:', pr)
        print(f"{len(paths)} notebooks checked, {len(problems)} problems"); return 1 if problems else 0
    for p in paths:
        print(f"running {p.relative_to(ROOT)} ...", flush=True); run(p)
    return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
