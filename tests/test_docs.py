"""The documentation site (`make docs`, docs/build.py): a fresh build in a temporary directory, checked as files
(always: CI must at least build the site) and then in headless Chromium (Debian's `chromium` with `chromium-driver`,
driven by selenium): the math is typeset by the local MathJax, the figures load, the API page lists the exported names.

One screenshot per key page is saved under _docs/screenshots/ (not committed). When Chromium is missing the test
installs it with apt-get if it runs as root (RANDSMOOTH_DOCS_NO_INSTALL=1 stops that); if it still cannot be had,
the browser checks are skipped with a message saying how to get it.
"""
from __future__ import annotations
import ast, functools, http.server, json, os, re, shutil, subprocess, sys, threading, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS, LIB = ROOT/'nbs', ROOT/'randsmooth_nb'
SHOTS = ROOT/'_docs'/'screenshots'
KEY_PAGES = {'home': 'index.html', '04_bounds': '04_bounds.html', 'api': 'api.html', 'results': 'paper_figures/README.html'}
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# Problems of the site's configuration (not of a notebook's content): each fails the build test.
CONFIG_PROBLEMS = re.compile(r"failed to import|Could not import extension|Extension error|Unknown directive type|"
                             r"Unknown interpreted text role|nonexisting document|isn't included in any toctree|"
                             r"unknown config value|Config value .* has type|Exception occurred|Traceback", re.I)


def exported_names() -> dict[str, list[str]]:
    "module -> its `__all__`, read from the source (no import), for every module but nbdev's `_modidx`."
    out = {}
    for p in sorted(LIB.glob('*.py')):
        if p.stem.startswith('_'): continue
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in node.targets):
                out[p.stem] = list(ast.literal_eval(node.value))
    return out


def figure_links() -> list[str]:
    "The PNG figures that paper_figures/README.md links to (the results page shows each one)."
    readme = ROOT/'paper_figures'/'README.md'
    return re.findall(r'^\s*[-*] \[[^\]]+\]\(([^)\s]+\.png)\)\s*$', readme.read_text(), re.M) if readme.exists() else []


# ------------------------------------------------------------------ the build (no browser)
@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "A fresh build of the site in a temporary directory: (site folder, build log)."
    out, work = tmp_path_factory.mktemp('site'), tmp_path_factory.mktemp('docs-work')
    t0 = time.time()
    r = subprocess.run([sys.executable, str(ROOT/'docs'/'build.py'), '--out', str(out), '--work', str(work), '-q'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"docs build failed (exit {r.returncode}):\n{log[-4000:]}"
    print(f"docs built in {time.time()-t0:.0f}s")
    return out, log


def test_build_has_every_page(site):
    out, _ = site
    for nb in sorted(NBS.glob('*.ipynb')): assert (out/f'{nb.stem}.html').is_file(), f"no page for {nb.name}"
    for page in KEY_PAGES.values(): assert (out/page).is_file(), page
    runs = ROOT/'paper_figures'/'runs'
    for nb in (runs.glob('[!.]*/[!.]*.ipynb') if runs.is_dir() else []):
        if nb.parent.name == 'smoke' or nb.name.endswith('.failed.ipynb'): continue
        assert (out/'paper_figures'/'runs'/nb.parent.name/f'{nb.stem}.html').is_file(), f"no page for {nb}"


def test_build_log_has_no_configuration_problem(site):
    bad = [l for l in site[1].splitlines() if CONFIG_PROBLEMS.search(l)]
    assert not bad, "configuration problems in the docs build:\n" + '\n'.join(bad[:20])


def test_site_is_offline(site):
    "No page or stylesheet loads anything from another host; MathJax and its fonts are in the site."
    out, _ = site
    external = re.compile(r'''<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["'](?:https?:)?//''', re.I)
    for page in out.rglob('*.html'):
        m = external.search(page.read_text(errors='replace'))
        assert not m, f"{page.relative_to(out)} loads from the network: {m[0]}"
    for css in (out/'_static').rglob('*.css'):
        assert not re.search(r'''(@import|url\()\s*["']?(https?:)?//''', css.read_text(errors='replace')), css
    mj = out/'_static'/'mathjax'
    assert (mj/'tex-chtml.js').stat().st_size > 100_000
    assert list((mj/'output'/'chtml'/'fonts'/'woff-v2').glob('*.woff')), "MathJax's fonts are missing"
    assert '_static/mathjax/tex-chtml.js' in (out/'04_bounds.html').read_text()


def test_api_page_lists_every_exported_name(site):
    html = (site[0]/'api.html').read_text()
    missing = [f'{m}.{n}' for m, names in exported_names().items() for n in names
               if f'id="randsmooth_nb.{m}.{n}"' not in html]
    assert not missing, f"{len(missing)} exported names missing from api.html: {missing[:20]}"
    for n in ('PGD', 'Smooth', 'theorem1_epsilon'): assert f'.{n}"' in html


def test_results_page_has_its_figures(site):
    out, _ = site
    page = out/'paper_figures'/'README.html'
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page.read_text())
    assert len(srcs) >= len(figure_links()), (srcs, figure_links())
    for s in srcs:
        f = (page.parent/s).resolve()
        assert f.is_file() and f.stat().st_size > 1000 and f.read_bytes()[:8] == PNG_MAGIC, f"broken figure {s}"


def test_notebook_pages_show_outputs_and_hide_hidden_cells(site):
    out, _ = site
    for p in sorted(NBS.glob('*.ipynb')):
        nb, html = json.loads(p.read_text()), (out/f'{p.stem}.html').read_text()
        shown = [c for c in nb['cells'] if c['cell_type'] == 'code' and c.get('outputs')
                 and not ''.join(c['source']).lstrip().startswith('#| hide')]
        if shown: assert 'cell_output' in html, f"{p.name}: outputs not shown"
    assert 'from nbdev.showdoc import' not in (out/'04_bounds.html').read_text(), "a `#| hide` cell is shown"


def test_no_unparsed_math(site):
    "Outside code and the math elements MathJax typesets, no page keeps `$$` or a `$...$` pair (math left as text)."
    raw = re.compile(r'(?<![\w$])\$[^$\s<][^$<]*\$')
    for page in sorted(site[0].rglob('*.html')):
        h = re.sub(r'<(pre|code|script|style)\b.*?</\1>', '', page.read_text(), flags=re.S)
        h = re.sub(r'<(span|div) class="math[^"]*">.*?</\1>', '', h, flags=re.S)
        assert '$$' not in h and not raw.search(h), f"{page.relative_to(site[0])}: unparsed math {raw.findall(h)[:3]}"


# ------------------------------------------------------------------ in headless Chromium
def _find_chromium() -> tuple[str | None, str | None]:
    chrome = next((p for p in ('/usr/lib/chromium/chromium', shutil.which('chromium'), shutil.which('chromium-browser'),
                               shutil.which('google-chrome')) if p and os.path.exists(p)), None)
    driver = next((p for p in (shutil.which('chromedriver'), '/usr/lib/chromium/chromedriver') if p and os.path.exists(p)), None)
    return chrome, driver


def _install_chromium() -> str:
    "apt-get install chromium chromium-driver (as root); returns what went wrong, '' on success."
    if os.environ.get('RANDSMOOTH_DOCS_NO_INSTALL') == '1': return 'RANDSMOOTH_DOCS_NO_INSTALL=1'
    if not shutil.which('apt-get') or not hasattr(os, 'geteuid') or os.geteuid() != 0: return 'not root with apt-get'
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    install = ['apt-get', 'install', '-y', '-qq', 'chromium', 'chromium-driver']
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode == 0: return ''
        subprocess.run(['apt-get', 'update', '-qq'], env=env, capture_output=True, timeout=300)
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        return '' if r.returncode == 0 else r.stderr[-500:]
    except (OSError, subprocess.TimeoutExpired) as e: return str(e)


@pytest.fixture(scope='module')
def served(site):
    "The built site on a local HTTP server (loopback only): its base URL."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    handler = functools.partial(Quiet, directory=str(site[0]))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown(); httpd.server_close()


@pytest.fixture(scope='module')
def browser():
    try: from selenium import webdriver
    except ImportError: pytest.skip("browser checks skipped: selenium is not installed (pip install -e '.[dev]')")
    chrome, driver = _find_chromium()
    if not (chrome and driver):
        why = _install_chromium()
        chrome, driver = _find_chromium()
        if not (chrome and driver):
            pytest.skip(f"browser checks skipped: Chromium or chromedriver not found and not installable ({why}); "
                        "install Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1280,1000',
              '--hide-scrollbars', '--no-first-run', '--disable-extensions', '--force-device-scale-factor=1'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    d.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield d
    d.quit()


def _open(d, url:str) -> list[str]:
    "Load `url`, wait for MathJax to finish (when the page has it); return the browser's error messages."
    d.get(url)
    d.execute_async_script("""const done = arguments[arguments.length - 1];
        const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
            ? MathJax.startup.promise.then(() => done(true), () => done(false))
            : (document.querySelector('script[src*="mathjax"]') ? setTimeout(wait, 50) : done(true));
        if (document.readyState === 'complete') wait(); else window.addEventListener('load', wait);""")
    return [e['message'] for e in d.get_log('browser') if e.get('level') == 'SEVERE' and 'favicon.ico' not in e['message']]


def _shot(d, name:str, selector:str|None=None):
    "Screenshot of the viewport, scrolled so `selector` (if found) is near the top."
    if selector: d.execute_script("const e = document.querySelector(arguments[0]); if (e) { e.scrollIntoView(); window.scrollBy(0, -120); }", selector)
    time.sleep(0.2)
    d.save_screenshot(str(SHOTS/f'{name}.png'))
    assert (SHOTS/f'{name}.png').read_bytes()[:8] == PNG_MAGIC


def _text_outside_code(d) -> str:
    return d.execute_script("""const m = document.querySelector('main') || document.body;
        const c = m.cloneNode(true); c.querySelectorAll('pre, code, mjx-container, script').forEach(e => e.remove());
        return c.innerText;""")


TIMEOUT = 30


def test_math_is_typeset(browser, served):
    d = browser; d.set_script_timeout(TIMEOUT)
    errors = _open(d, served + KEY_PAGES['04_bounds'])
    n_math = d.execute_script("return document.querySelectorAll('main .math').length")
    n_mjx = d.execute_script("return document.querySelectorAll('main mjx-container').length")
    n_err = d.execute_script("return document.querySelectorAll('mjx-merror').length")
    src = d.execute_script("return document.querySelector('script[src*=\"mathjax\"]').src")
    assert src.startswith(served), f"MathJax is not served by the site: {src}"
    assert n_math > 10 and n_mjx >= n_math, f"{n_mjx} typeset of {n_math} math elements"
    assert d.execute_script("return document.querySelectorAll('mjx-container[display=\"true\"]').length") > 0
    assert n_err == 0, f"{n_err} TeX errors on 04_bounds"
    text = _text_outside_code(d)
    assert '$$' not in text and '\\(' not in text and '\\[' not in text, "raw TeX left on 04_bounds"
    assert not [e for e in errors if 'Failed to load' in e or 'net::' in e], errors
    _shot(d, '04_bounds', 'mjx-container[display="true"]')


def test_figures_load(browser, served):
    d = browser; d.set_script_timeout(TIMEOUT)
    errors = _open(d, served + KEY_PAGES['results'])
    d.execute_async_script("""const done = arguments[arguments.length - 1];
        Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))
            .then(() => done(true));""")
    imgs = d.execute_script("return [...document.querySelectorAll('main img')].map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert len(imgs) >= max(1, len(figure_links())), imgs
    broken = [s for s, w in imgs if not w]
    assert not broken, f"figures that did not load: {broken}"
    assert not [e for e in errors if 'Failed to load' in e or 'net::' in e], errors
    _shot(d, 'results', 'main figure')


def test_api_page_in_browser(browser, served):
    d = browser; d.set_script_timeout(TIMEOUT)
    errors = _open(d, served + KEY_PAGES['api'])
    text = d.execute_script("return document.querySelector('main').innerText")
    for n in ('PGD', 'Smooth', 'theorem1_epsilon'):
        assert d.execute_script(f"return !!document.getElementById('randsmooth_nb.' + arguments[0])", 
                                {'PGD': 'attacks.PGD', 'Smooth': 'certify.Smooth', 'theorem1_epsilon': 'bounds.theorem1_epsilon'}[n])
        assert n in text
    assert not [e for e in errors if 'Failed to load' in e or 'net::' in e], errors
    _shot(d, 'api', '[id="randsmooth_nb.bounds.theorem1_epsilon"]')


def test_home_page(browser, served):
    d = browser; d.set_script_timeout(TIMEOUT)
    errors = _open(d, served + KEY_PAGES['home'])
    links = set(d.execute_script("return [...document.querySelectorAll('nav a.reference.internal')].map(a => a.getAttribute('href'))"))
    want = {f'{p.stem}.html' for p in NBS.glob('*.ipynb') if p.stem != 'index'} | {'api.html', 'paper_figures/README.html'}
    assert want <= links, f"missing from the navigation: {sorted(want - links)}"
    assert 'randsmooth_nb' in d.title
    assert not [e for e in errors if 'Failed to load' in e or 'net::' in e], errors
    _shot(d, 'home')
