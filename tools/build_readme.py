"""README.md from nbs/index.ipynb (the home page notebook), without Quarto.

    python tools/build_readme.py            # execute nbs/index.ipynb in place (execnb), then write README.md
    python tools/build_readme.py --no-run   # only convert the committed notebook
    python tools/build_readme.py --check    # exit 1 if README.md differs from the conversion (make test runs this)

Markdown cells are copied as they are. A code cell is shown as a Python block, except with `#| hide` (left out) or
`#| echo: false` (only its output). Outputs: text/markdown as it is, text/plain and streams as plain blocks, images
left out (the notebook shows them).
"""
from __future__ import annotations
import json, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NB, README = ROOT/'nbs'/'index.ipynb', ROOT/'README.md'


def _text(v) -> str: return ''.join(v) if isinstance(v, list) else str(v)


def convert(nb:dict) -> str:
    parts = []
    for c in nb['cells']:
        src = _text(c['source'])
        if c['cell_type'] == 'markdown': parts.append(src.strip('\n')); continue
        if c['cell_type'] != 'code': continue
        flags = [l.strip() for l in src.splitlines() if l.startswith('#|')]
        if '#| hide' in flags: continue
        body = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip('\n')
        if '#| echo: false' not in flags and body: parts.append(f"```python\n{body}\n```")
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream': parts.append(f"```\n{_text(o['text']).rstrip()}\n```")
            elif o.get('output_type') in ('execute_result', 'display_data'):
                d = o.get('data', {})
                if 'text/markdown' in d: parts.append(_text(d['text/markdown']).strip('\n'))
                elif 'text/plain' in d and 'image/png' not in d: parts.append(f"```\n{_text(d['text/plain']).rstrip()}\n```")
    return ('<!-- Generated from nbs/index.ipynb by tools/build_readme.py (make readme): edit the notebook, not this file. -->\n\n'
            + '\n\n'.join(p for p in parts if p) + '\n')


def run_in_place():
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb = read_nb(NB); cwd = os.getcwd(); os.chdir(NB.parent)
    try: CaptureShell().run_all(nb, exc_stop=True)
    finally: os.chdir(cwd)
    write_nb(nb, NB)


def main(argv):
    if '--check' in argv:
        want = convert(json.loads(NB.read_text()))
        if README.read_text() != want:
            print("FAIL: README.md is not what nbs/index.ipynb gives; run `make readme` and commit both"); return 1
        return 0
    if '--no-run' not in argv: run_in_place()
    README.write_text(convert(json.loads(NB.read_text())))
    print(f"wrote {README.relative_to(ROOT)}"); return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
