"""Sphinx configuration of the randsmooth_nb site. Build with `make docs` (docs/build.py stages the sources first)."""
from __future__ import annotations
import configparser, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_cfg = configparser.ConfigParser(); _cfg.read(ROOT/'settings.ini')
_s = _cfg['DEFAULT']

project = _s['lib_name']
author = _s['author']
copyright = '2026 onwards, ' + author
release = version = _s['version']
root_doc = 'index'   # nbs/index.ipynb, the home page

extensions = [
    'myst_nb',                  # notebooks and Markdown (MyST)
    'sphinx.ext.autodoc',       # the API reference
    'sphinx-mathjax-offline',   # MathJax 3 copied into _static/mathjax: no CDN
]

# Notebooks are shown with their committed outputs, never executed.
nb_execution_mode = 'off'
nb_render_markdown_format = 'myst'            # text/markdown outputs (the verdict table) with tables
nb_merge_streams = True
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_dmath_double_inline = True               # `$$...$$` inside a paragraph is display math too
myst_heading_anchors = 3
exclude_patterns = ['**.ipynb_checkpoints', '**/.*']
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure']

# Everything the pages load is local: the theme's assets and MathJax (set by sphinx-mathjax-offline).
html_theme = 'sphinx_book_theme'
html_title = project
html_theme_options = {
    'show_toc_level': 2,
    'navigation_with_keys': False,
    'use_download_button': True,
    'use_fullscreen_button': False,
    'use_repository_button': False,
    'home_page_in_toc': True,
    'navbar_persistent': [],     # no second search box in a header row (the sidebar has one)
}
html_static_path: list[str] = []
html_last_updated_fmt = None
html_copy_source = False

# API: each module's __all__, typed signatures, nbdev docstrings (Markdown-ish) turned into reST below.
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
default_role = 'code'          # `name` in a docstring is code, as in Markdown
add_module_names = False
python_use_unqualified_type_names = True
nitpicky = False

_INLINE = re.compile(r'`[^`]+`|(?<![\\$])\$[^$\n]+?(?<!\\)\$(?!\$)')   # Markdown code spans and $math$
_PLAIN_MARKUP = re.compile(r'([*|\\]|_(?=\W|$))')                      # reST markup in plain text: escaped


def md_to_rst(line:str) -> str:
    "One line of an nbdev (Markdown) docstring as reST: `code` becomes ``code``, $x$ becomes :math:`x`, and\n    `*`, `|`, `\\`, `word_` outside them are escaped; inline markup touching other text is separated with `\\ `."
    out, pos = [], 0
    for m in _INLINE.finditer(line):
        out.append(_PLAIN_MARKUP.sub(r'\\\1', line[pos:m.start()]))
        tok = m[0]
        role = f'``{tok[1:-1]}``' if tok[0] == '`' else f':math:`{tok[1:-1]}`'
        if m.start() > 0 and not line[m.start()-1].isspace() and line[m.start()-1] not in '([{"\'<-/:' \
                and not ''.join(out).endswith('\\ '): role = '\\ ' + role
        if m.end() < len(line) and not line[m.end()].isspace() and line[m.end()] not in ')]}"\'>.,;:!?-/': role += '\\ '
        out.append(role); pos = m.end()
    out.append(_PLAIN_MARKUP.sub(r'\\\1', line[pos:]))
    return ''.join(out)


def _docments(obj) -> dict:
    "nbdev docments: parameter -> comment (fastcore), {} when unavailable."
    try:
        from fastcore.docments import docments
        d = docments(obj, full=False)
        return {k: v for k, v in d.items() if v and k != 'self'}
    except Exception: return {}


def _summary(obj) -> str:
    "What a constant without a docstring is: its type, and its keys or length."
    t = type(obj).__name__
    if isinstance(obj, dict) and obj:
        keys = list(obj)
        shown = ', '.join(f'``{k!r}``' for k in keys[:12]) + (', ...' if len(keys) > 12 else '')
        return f'``{t}`` with {len(keys)} keys: {shown}.'
    if isinstance(obj, (list, tuple, set, frozenset)): return f'``{t}`` of {len(obj)} items.'
    return f'``{t}``.'


def _process_docstring(app, what, name, obj, options, lines):
    "nbdev docstrings are Markdown: converted line by line to reST; docments comments become :param: fields."
    if what in ('data', 'attribute') and getattr(obj, '__doc__', None) == getattr(type(obj), '__doc__', None):
        lines[:] = [_summary(obj), '']
        return
    in_block = False
    for i, l in enumerate(lines):
        if l.lstrip().startswith('.. ') or l.startswith('    ') and in_block: in_block = True; continue   # reST kept
        in_block = False
        lines[i] = md_to_rst(l)
    if what in ('function', 'method', 'class'):
        docs = _docments(obj)
        ret = docs.pop('return', None)
        if docs or ret:
            if lines and lines[-1].strip(): lines.append('')
            lines += [f':param {k}: {md_to_rst(" ".join(str(v).split()))}' for k, v in docs.items()]
            if ret: lines.append(f':returns: {md_to_rst(" ".join(str(ret).split()))}')
            lines.append('')


def _move_output_folder(app):
    """MyST-NB writes notebooks' external files to <outdir>/../jupyter_execute (the repository root for _docs/): keep
    them in the work directory instead (`-D randsmooth_docs_work=DIR`, set by docs/build.py)."""
    work = app.config.randsmooth_docs_work
    if work and hasattr(app.env, 'mystnb_config'):
        app.env.mystnb_config = app.env.mystnb_config.copy(output_folder=str(Path(work).resolve()/'jupyter_execute'))


def setup(app):
    app.add_config_value('randsmooth_docs_work', '', 'env')
    app.connect('builder-inited', _move_output_folder, priority=900)   # after MyST-NB's own (500)
    app.connect('autodoc-process-docstring', _process_docstring)
