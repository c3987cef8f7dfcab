"""Build the static HTML site of randsmooth_nb, offline, with Sphinx + MyST-NB (`make docs`).

    python docs/build.py                    # stage the sources in build/docs/src, build the site into _docs/
    python docs/build.py --out DIR --work W # build elsewhere (the test builds into a temporary directory)
    python docs/build.py --clean            # drop the staged sources and Sphinx's cache first (a full rebuild)

Nothing is executed: every notebook is shown with the outputs it was committed with (`nb_execution_mode = 'off'`
in docs/conf.py). The staged source tree mirrors the repository, so the notebooks' relative links keep working:

    index.ipynb, NN_*.ipynb, exp_*.ipynb  copies of nbs/*.ipynb; `#| hide` cells and cells holding only nbdev
                                          directives are tagged `remove-cell`, `#| echo: false` cells `remove-input`;
                                          the home page (index) gets the site's table of contents as a hidden cell
    paper_figures/README.md               the results page: paper_figures/README.md, with each link to a PNG figure
                                          shown as the figure itself, and the executed notebooks of runs/<preset>/
    paper_figures/**.png, runs/*/*.ipynb  the figures and executed experiment notebooks (smoke results left out)
    api.rst                               the API reference: every name in each module's `__all__`

Files are rewritten only when their content changes, so a second build is incremental (seconds).
"""
from __future__ import annotations
import argparse, importlib, inspect, json, re, shutil, sys, time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
NBS, FIGS, LIB = ROOT/'nbs', ROOT/'paper_figures', ROOT/'randsmooth_nb'
PKG = 'randsmooth_nb'
DIRECTIVE_ONLY = re.compile(r'^\s*(#\|[^\n]*\n?\s*)+$')
FIG_LINK = re.compile(r'^(\s*)[-*] \[([^\]]+)\]\(([^)\s]+\.png)\)\s*$')


def _text(v) -> str: return ''.join(v) if isinstance(v, list) else str(v)


def write_if_changed(path:Path, text:str|bytes, written:set) -> None:
    "Write `path` only when its content differs (keeps Sphinx's incremental build), and record it in `written`."
    written.add(path.resolve())
    data = text.encode() if isinstance(text, str) else text
    if path.exists() and path.read_bytes() == data: return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------------------------------------------------------------- notebooks
def library_notebooks() -> list[str]:
    "Stems of the library notebooks (`NN_*`, `NNa_*`), in order."
    return sorted(p.stem for p in NBS.glob('[0-9]*.ipynb'))


def experiment_notebooks() -> list[str]:
    return sorted(p.stem for p in NBS.glob('exp_*.ipynb'))


def tag_cells(nb:dict) -> dict:
    "Tag nbdev's hidden cells for MyST-NB: `#| hide` and directive-only cells removed, `#| echo: false` shows output only."
    for c in nb.get('cells', []):
        if c.get('cell_type') != 'code': continue
        src = _text(c.get('source', ''))
        flags = {l.strip().replace(' ', '') for l in src.splitlines() if l.lstrip().startswith('#|')}
        tags = c.setdefault('metadata', {}).setdefault('tags', [])
        if '#|hide' in flags or (src.strip() and DIRECTIVE_ONLY.match(src)): tags.append('remove-cell')
        elif '#|echo:false' in flags: tags.append('remove-input')
        if '#|output:false' in flags: tags.append('remove-output')
    return nb


def toc_cell(runs:list[str]) -> dict:
    "A hidden table of contents for the home page: the sidebar's navigation."
    def tree(caption, entries): return '```{toctree}\n:hidden:\n:caption: ' + caption + '\n\n' + '\n'.join(entries) + '\n```\n'
    src = (tree('Library', library_notebooks()) + '\n' + tree('Experiments', experiment_notebooks()) + '\n'
           + tree('Reference', ['api', 'paper_figures/README']))
    return {'cell_type': 'markdown', 'id': 'site-toc', 'metadata': {}, 'source': src}


def link_notebook_map(nb:dict, stems:set) -> dict:
    "In the home page's notebook map, make each `NN_name` in the first column a link to its page."
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        src = _text(c['source'])
        new = re.sub(r'^\| `([^`]+)` \|', lambda m: f"| [`{m[1]}`]({m[1]}.ipynb) |" if m[1] in stems else m[0], src, flags=re.M)
        if new != src: c['source'] = new
    return nb


def stage_notebooks(src:Path, written:set, runs:list[str]) -> None:
    stems = {p.stem for p in NBS.glob('*.ipynb')}
    for p in sorted(NBS.glob('*.ipynb')):
        nb = tag_cells(json.loads(p.read_text()))
        if p.stem == 'index':
            nb = link_notebook_map(nb, stems - {'index'})
            nb['cells'].append(toc_cell(runs))
        write_if_changed(src/p.name, json.dumps(nb, indent=1, ensure_ascii=False) + '\n', written)


# ---------------------------------------------------------------- results page
def result_presets() -> list[str]:
    "Presets with executed notebooks in paper_figures/runs/ (smoke left out: synthetic data, not committed)."
    runs = FIGS/'runs'
    return sorted(d.name for d in runs.iterdir() if d.is_dir() and d.name != 'smoke') if runs.is_dir() else []


def results_page(readme:str, runs:dict[str, list[str]]) -> str:
    "paper_figures/README.md with each `- [name](file.png)` link shown as the figure, then the executed notebooks."
    out = []
    for line in readme.splitlines():
        m = FIG_LINK.match(line)
        if m and (FIGS/m[3]).is_file():
            out += ['', f'```{{figure}} {m[3]}', f':alt: {m[2]}', ':width: 100%', '', f'{m[2]} (`{m[3]}`)', '```', '']
        else: out.append(line)
    for preset, names in runs.items():
        if not names: continue
        out += ['', f'## Executed notebooks (`{preset}`)', '',
                f'The experiment notebooks as `randsmooth-reproduce` ran them for preset `{preset}`, with their outputs.', '',
                '```{toctree}', ':maxdepth: 1', ''] + [f'runs/{preset}/{n}' for n in names] + ['```']
    return '\n'.join(out) + '\n'


def stage_results(src:Path, written:set) -> list[str]:
    dst = src/'paper_figures'
    if not (FIGS/'README.md').is_file():
        write_if_changed(dst/'README.md', '# Results\n\nNo results yet: run `make reproduce`.\n', written); return []
    for png in sorted(FIGS.rglob('*.png')):
        rel = png.relative_to(FIGS)
        if rel.parts[0] == 'smoke' or rel.parts[:2] == ('runs', 'smoke') or any(s.startswith('.') for s in rel.parts): continue
        write_if_changed(dst/rel, png.read_bytes(), written)
    runs = {}
    for preset in result_presets():
        runs[preset] = sorted(p.stem for p in (FIGS/'runs'/preset).glob('[!.]*.ipynb') if not p.name.endswith('.failed.ipynb'))
        for n in runs[preset]:
            nb = tag_cells(json.loads((FIGS/'runs'/preset/f'{n}.ipynb').read_text()))
            write_if_changed(dst/'runs'/preset/f'{n}.ipynb', json.dumps(nb, indent=1, ensure_ascii=False) + '\n', written)
    write_if_changed(dst/'README.md', results_page((FIGS/'README.md').read_text(), runs), written)
    return [f'{p}/{n}' for p, ns in runs.items() for n in ns]


# ---------------------------------------------------------------- API reference
def modules() -> list[str]:
    "The package's modules, except nbdev's index `_modidx`."
    return sorted(p.stem for p in LIB.glob('*.py') if not p.stem.startswith('_'))


def module_notebooks() -> dict[str, str]:
    "module name -> stem of the notebook that exports it (its `#| default_exp`)."
    out = {}
    for p in sorted(NBS.glob('*.ipynb')):
        for c in json.loads(p.read_text())['cells']:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', _text(c['source']), re.M)
            if m: out.setdefault(m[1], p.stem); break
    return out


def notebook_title(stem:str) -> str:
    for c in json.loads((NBS/f'{stem}.ipynb').read_text())['cells']:
        m = re.search(r'^#\s+(.+)$', _text(c['source']), re.M) if c['cell_type'] == 'markdown' else None
        if m: return m[1].strip()
    return stem


SHORT_VALUE = 100   # data whose repr is longer than this is listed without its value


def api_page() -> str:
    "api.rst: one section per module, one autodoc entry per name of its `__all__` (in order)."
    nbmap = module_notebooks()
    lines = ['API reference', '=============', '',
             'Every name exported by each module of ``randsmooth_nb`` (its ``__all__``), with its signature, docstring and',
             "the comments documenting its parameters (nbdev's docments). Each module is written by one notebook, linked below.", '']
    for mod in modules():
        full = f'{PKG}.{mod}'
        m = importlib.import_module(full)
        names = list(getattr(m, '__all__', []))
        head = f'``{full}``'
        lines += [head, '-' * len(head), '', f'.. automodule:: {full}', '']
        if mod in nbmap: lines += [f'Source notebook: :doc:`{nbmap[mod]}` ({notebook_title(nbmap[mod])}).', '']
        lines += [f'Exports ({len(names)}): ' + ', '.join(f':py:obj:`~{full}.{n}`' for n in names) + '.', '']
        for n in names:
            obj = getattr(m, n, None)
            if inspect.isclass(obj):
                lines += [f'.. autoclass:: {full}.{n}', '   :members:', '   :undoc-members:', '   :show-inheritance:', '']
            elif inspect.isroutine(obj):
                lines += [f'.. autofunction:: {full}.{n}', '']
            else:
                lines += [f'.. autodata:: {full}.{n}'] + (['   :no-value:'] if len(repr(obj)) > SHORT_VALUE else []) + ['']
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------- build
def stage(src:Path) -> None:
    "Lay out the Sphinx source tree in `src`, removing files that no longer have a source."
    written: set = set()
    sys.path.insert(0, str(ROOT))
    runs = stage_results(src, written)
    stage_notebooks(src, written, runs)
    write_if_changed(src/'api.rst', api_page(), written)
    for p in sorted(src.rglob('*'), reverse=True):
        if p.is_file() and p.resolve() not in written: p.unlink()
        elif p.is_dir() and not any(p.iterdir()): p.rmdir()


def build(out:Path, work:Path, clean:bool=False, quiet:bool=False, jobs:str='1') -> int:
    if clean: shutil.rmtree(work, ignore_errors=True)
    src, doctrees = work/'src', work/'doctrees'
    t0 = time.time()
    stage(src)
    from sphinx.cmd.build import build_main
    args = ['-b', 'html', '-c', str(DOCS), '-d', str(doctrees), '-j', jobs, '-D', f'randsmooth_docs_work={work}'] + (['-q'] if quiet else []) + [str(src), str(out)]
    rc = build_main(args)
    print(f"docs: {'built' if rc == 0 else 'FAILED'} {out} in {time.time()-t0:.0f}s (open {out/'index.html'})")
    return rc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', type=Path, default=ROOT/'_docs', help='where the HTML site goes (default: _docs/)')
    ap.add_argument('--work', type=Path, default=ROOT/'build'/'docs', help='staged sources and Sphinx cache (default: build/docs/)')
    ap.add_argument('--clean', action='store_true', help='full rebuild: drop the staged sources and the cache first')
    ap.add_argument('-q', '--quiet', action='store_true', help='only warnings and errors')
    ap.add_argument('-j', '--jobs', default='1', help="Sphinx's parallel jobs (default 1)")
    a = ap.parse_args(argv)
    return build(a.out.resolve(), a.work.resolve(), a.clean, a.quiet, a.jobs)


if __name__ == '__main__': sys.exit(main())
