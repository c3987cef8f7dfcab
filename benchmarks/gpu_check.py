"""Prepared GPU check (issue 9, item 4): one script, <= 8 minutes on one NVIDIA H200, five sections.

    bash benchmarks/gpu_check.sh [--dry-run] [--json PATH] [--threads N]     # the .sh installs the project offline first
    python benchmarks/gpu_check.py --dry-run                                 # here, with the package importable

(a) WRN-28-10 training throughput: `training.train` as the library runs it (steps timed between optimizer steps)
    against a bare bf16-autocast channels-last loop (forward, cross-entropy, backward, SGD step on one resident batch);
    the fraction of 790 TFLOP/s each reaches, counting 3 x 5.25 GFLOP per 32x32 image (goal: ours >= 35 %).
(b) EoT-PGD, 20 steps x EoT 80 on B = 100 images: `attacks.PGD` with precision='bf16' and 'fp32' against torchattacks
    `EOTPGD(eot_iter=80)` on the same network wrapped for [0, 1] inputs (as benchmarks/eot_attack.py); goal: ours <= 1/3.
(c) Monte Carlo draws per second of `noise.label_counts` (as the library runs it, and under bf16 autocast) and the peak
    GPU memory of every section (torch.cuda.max_memory_allocated).
(d) the plan of every paper-preset notebook (`randsmooth_nb.plan`), its hours from a calibration measured on this
    device; goal: the whole suite <= 12 h on one H200.
(e) CUDA only, last: `training.train(compile=True)` against eager at the steps of (a), to decide whether `compile`
    should be on by default (it stays off until this is measured).

`--dry-run` runs the same code paths on the CPU at toy size (wrn-10-1, small batches, 2 steps, EoT 4; section (d)
plans the smoke preset) in well under a minute. Without a CUDA device a full run falls back to the dry-run sizes on
the CPU and says so. Each section records an error instead of stopping the others; a JSON of everything is written.
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, sys, tempfile, time, traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

PEAK_TFLOPS = 790.0   # one H200, dense bf16 matrix work (issue 9): the yardstick of section (a)
GOALS = {'a_fraction_of_peak': 0.35, 'b_ratio_ours_over_torchattacks': 1 / 3, 'd_suite_hours': 12.0}
SIZES = {   # full: the settings on one H200; dry: toy size on the CPU
    'full': dict(arch='wrn-28-10', train_batch=400, warmup=3, train_steps=10, B=100, steps=20, eot=80, mc_B=100, mc_n=1000,
                 plan_preset='paper', plan_budget=60.0),
    'dry': dict(arch='wrn-10-1', train_batch=16, warmup=1, train_steps=2, B=4, steps=2, eot=4, mc_B=8, mc_n=32,
                plan_preset='smoke', plan_budget=3.0),
}


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def clock(fn, dev) -> float:
    "Wall seconds of fn(), with the GPU synchronized before and after."
    sync(dev); t = time.perf_counter(); fn(); sync(dev); return time.perf_counter() - t


def reset_peak(dev):
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev):
    return round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == 'cuda' else None


def gflops(arch:str) -> float:
    # forward GFLOPs per 32x32 image, counted from the architectures (not measured)
    return {'wrn-28-10': 5.25, 'wrn-16-4': 0.39, 'wrn-10-1': 0.012, 'tiny': 0.001}.get(arch, float('nan'))


class To01(nn.Module):
    "The network on [0, 1] inputs, as torchattacks expects (as in benchmarks/eot_attack.py)."
    def __init__(self, net): super().__init__(); self.net = net
    def forward(self, x01): return self.net(x01 * 2 - 1)


def noisy_net(arch, dev):
    from randsmooth_nb.models import build_model
    from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork
    net = RandomizedNetwork(build_model(arch), NoiseInjection('gaussian', 0.25)).to(dev).eval()
    for p in net.parameters(): p.requires_grad_(False)
    return net


# ---------------------------------------------------------------------------------------------------------------- (a)
def train_steps(S, dev, compile=False):
    "Seconds per step of `training.train` after the warm-up steps, its peak memory, and the autocast its forward ran under."
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.nn.modules.module import register_module_forward_hook
    from randsmooth_nb.data import ImageData
    from randsmooth_nb.training import TrainConfig, train
    b, warm, k = S['train_batch'], S['warmup'], S['train_steps']
    g = torch.Generator().manual_seed(0); n = b * (warm + k)          # one epoch covers every step: no epoch-end work
    data = ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10,
                     [f'c{i}' for i in range(10)], 'random')
    cfg = TrainConfig(arch=S['arch'], dist='gaussian', sd=0.25, epochs=1, batch_size=b)   # the paper recipe (dropout 0.3)
    stamps, seen, hooks = [], {}, []
    def precision(mod, inp, outp):                                     # what autocast the library's forward runs under (once)
        try: seen['autocast'] = str(torch.get_autocast_dtype(dev.type)) if torch.is_autocast_enabled(dev.type) else 'off (fp32)'
        except (TypeError, AttributeError, RuntimeError): seen['autocast'] = 'unknown'
        hooks[1].remove()                                              # a global hook on every module would slow the steps
    hooks.append(register_optimizer_step_post_hook(lambda *a, **kw: (sync(dev), stamps.append(time.perf_counter()))))
    hooks.append(register_module_forward_hook(precision))
    h1, h2 = hooks
    reset_peak(dev)
    try: train(cfg, data, device=dev, progress=False, compile=compile)
    finally: h1.remove(); h2.remove()
    return [t1 - t0 for t0, t1 in zip(stamps[warm - 1:], stamps[warm:])], peak_gib(dev), seen.get('autocast', 'unknown')


def step_row(name, ts, mem, S):
    b, flop, t = S['train_batch'], 3 * gflops(S['arch']) * 1e9, statistics.median(ts)
    return dict(implementation=name, ms_per_step=1e3 * t, img_per_s=b / t, tflops=b / t * flop / 1e12,
                fraction_of_peak=b / t * flop / 1e12 / PEAK_TFLOPS, peak_gib=mem, steps_timed=len(ts))


def part_train(S, dev) -> dict:
    from randsmooth_nb.models import build_model
    b, warm, k = S['train_batch'], S['warmup'], S['train_steps']
    ours, mem_ours, autocast = train_steps(S, dev)

    def bare(benchmark:bool):
        old = torch.backends.cudnn.benchmark; torch.backends.cudnn.benchmark = benchmark
        try:
            m = build_model(S['arch'], dropout=0.3, leaky_slope=0.1).to(dev).to(memory_format=torch.channels_last).train()
            decay = [p for p in m.parameters() if p.ndim > 1]; flat = [p for p in m.parameters() if p.ndim <= 1]
            opt = torch.optim.SGD([{'params': decay, 'weight_decay': 4e-4}, {'params': flat, 'weight_decay': 0.0}], lr=0.1, momentum=0.9)
            x = (torch.rand(b, 3, 32, 32, device=dev) * 2 - 1).contiguous(memory_format=torch.channels_last)
            y = torch.arange(b, device=dev) % 10
            def step():
                with torch.autocast(dev.type, dtype=torch.bfloat16): loss = F.cross_entropy(m(x).float(), y)
                opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            for _ in range(warm): step()
            return [clock(step, dev) for _ in range(k)]
        finally: torch.backends.cudnn.benchmark = old
    reset_peak(dev); bare_t = bare(False); mem_bare = peak_gib(dev)
    bare_bm = bare(True) if dev.type == 'cuda' else None
    if dev.type == 'cuda':                                              # does a bigger batch use the GPU better?
        b0 = b; b = 2 * b0
        try: bare_2b = bare(True)
        finally: b = b0
    else: bare_2b = None
    row = lambda name, ts, mem: step_row(name, ts, mem, S)
    rows = [row(f"ours: training.train (autocast: {autocast}, channels-last, noise, augmentation)", ours, mem_ours),
            row('bare loop: bf16 autocast, channels-last, SGD', bare_t, mem_bare)]
    if bare_bm: rows.append(row('bare loop, cudnn.benchmark=True', bare_bm, None))
    if bare_2b:
        r2 = row(f'bare loop, cudnn.benchmark=True, batch {2 * b}', bare_2b, None)
        r2['img_per_s'] *= 2; r2['tflops'] *= 2; r2['fraction_of_peak'] *= 2; rows.append(r2)   # step_row counts batch b
    return dict(arch=S['arch'], batch=b, rows=rows, ratio_ours_over_bare=rows[0]['img_per_s'] / rows[1]['img_per_s'],
                fraction_of_peak_ours=rows[0]['fraction_of_peak'], goal=GOALS['a_fraction_of_peak'],
                met=rows[0]['fraction_of_peak'] >= GOALS['a_fraction_of_peak'], autocast_ours=autocast)


# ---------------------------------------------------------------------------------------------------------------- (b)
def part_eot(S, dev) -> dict:
    from randsmooth_nb.attacks import PGD
    net, B, steps, eot = noisy_net(S['arch'], dev), S['B'], S['steps'], S['eot']
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(B, 3, 32, 32, generator=g) * 2 - 1).to(dev); y = torch.randint(0, 10, (B,), generator=g).to(dev)
    impl = {'ours: attacks.PGD, precision=bf16': lambda s: PGD(net, eps=0.06, step=0.006, steps=s, eot=eot, precision='bf16')(x, y),
            'ours: attacks.PGD, precision=fp32': lambda s: PGD(net, eps=0.06, step=0.006, steps=s, eot=eot, precision='fp32')(x, y)}
    try:
        import torchattacks
        impl['torchattacks.EOTPGD (fp32)'] = lambda s: torchattacks.EOTPGD(To01(net).eval(), eps=0.03, alpha=0.003, steps=s,
                                                                           eot_iter=eot)((x + 1) / 2, y) * 2 - 1
        missing = None
    except ImportError as e: missing = f"torchattacks not importable ({e}): no reference time"
    from randsmooth_nb.noise import rows_per_pass
    rpp = rows_per_pass(net, x, grad=True)                              # what the attack's passes use (fitted on CUDA)
    rows, outs = [], {}
    for name, f in impl.items():
        f(1)                                                            # warm-up: one step
        reset_peak(dev); t0 = time.perf_counter(); sync(dev); outs[name] = f(steps); sync(dev); t = time.perf_counter() - t0
        rows.append(dict(implementation=name, seconds=t, rows_per_s=steps * eot * B / t, peak_gib=peak_gib(dev)))
    def bare_compute():                                                 # the ceiling: the same rows, forward + backward to the input
        base = net.base
        for _ in range(steps):
            for s0 in range(0, eot, max(1, rpp // B)):
                c = min(max(1, rpp // B), eot - s0)
                xr = x.repeat(c, 1, 1, 1).contiguous(memory_format=torch.channels_last).requires_grad_(True)
                with torch.autocast(dev.type, dtype=torch.bfloat16): z = base(xr)
                torch.autograd.grad(F.cross_entropy(z.float(), y.repeat(c)), xr)
    bare_compute(); reset_peak(dev); t = clock(bare_compute, dev)
    rows.append(dict(implementation=f'bare compute: bf16 forward+backward, no noise, {max(1, rpp // B) * B} rows/pass', seconds=t,
                     rows_per_s=steps * eot * B / t, peak_gib=peak_gib(dev)))
    with torch.no_grad():                                               # the same attack: mean EoT loss of each result
        ev = lambda xa: F.cross_entropy(net.forward_samples(xa, 32).reshape(32 * B, -1), y.repeat(32)).item()
        clean = ev(x)
        for r in rows: r['loss_after'] = ev(outs[r['implementation']]) if r['implementation'] in outs else None
    T = {r['implementation']: r['seconds'] for r in rows}
    theirs = T.get('torchattacks.EOTPGD (fp32)')
    ratio = lambda k: T[k] / theirs if theirs else None
    rb, rf = ratio('ours: attacks.PGD, precision=bf16'), ratio('ours: attacks.PGD, precision=fp32')
    over_bare = T['ours: attacks.PGD, precision=bf16'] / rows[-1]['seconds']   # ours (bf16) against the bare ceiling
    return dict(arch=S['arch'], B=B, steps=steps, eot=eot, rows_per_pass_ours=max(1, rpp // B) * B, clean_loss=clean, rows=rows, ratio_bf16_over_torchattacks=rb,
                ratio_fp32_over_torchattacks=rf, ratio_bf16_over_bare_compute=over_bare, goal=GOALS['b_ratio_ours_over_torchattacks'],
                met=None if rb is None else rb <= GOALS['b_ratio_ours_over_torchattacks'], note=missing)


# ---------------------------------------------------------------------------------------------------------------- (c)
def part_mc(S, dev) -> dict:
    from randsmooth_nb.noise import label_counts, rows_per_pass
    net, B, n = noisy_net(S['arch'], dev), S['mc_B'], S['mc_n']
    x = torch.rand(B, 3, 32, 32, device=dev) * 2 - 1
    rows = []
    for name, ctx in (('noise.label_counts (library: fp32)', lambda: torch.autocast(dev.type, enabled=False)),
                      ('noise.label_counts under bf16 autocast', lambda: torch.autocast(dev.type, dtype=torch.bfloat16))):
        def run():
            with ctx(): return label_counts(net, x, n)
        c = run(); assert int(c.sum()) == n * B                         # warm-up, and every draw counted
        reset_peak(dev); t = clock(run, dev)
        rows.append(dict(implementation=name, seconds=t, draws_per_s=n * B / t, peak_gib=peak_gib(dev)))
    rpp = rows_per_pass(net, x, grad=False)                             # fitted to free memory on CUDA (noise.fit_max_batch)
    return dict(arch=S['arch'], B=B, n=n, rows_per_pass=max(1, rpp // B) * B, rows=rows)


# ---------------------------------------------------------------------------------------------------------------- (d)
def part_plan(S, dev) -> dict:
    from randsmooth_nb.plan import plan
    with tempfile.TemporaryDirectory() as cache:                    # an empty model cache: everything is planned from scratch
        p = plan(S['plan_preset'], cache_dir=cache, device=dev.type, budget_s=S['plan_budget'], log=print)
    print(p.table())
    t = p.total
    return dict(preset=p.preset, plan=p.as_dict(), hours={r['notebook']: r['hours'] for r in p.rows}, suite_hours=t['hours'],
                not_in_hours=t['unknown'], goal=GOALS['d_suite_hours'],
                met=None if t['hours'] is None else t['hours'] <= GOALS['d_suite_hours'])


# ---------------------------------------------------------------------------------------------------------------- (e)
def part_compile(S, dev) -> dict:
    "`training.train(compile=True)` against eager, the same steps as (a); CUDA only (compiling takes minutes on a CPU)."
    if dev.type != 'cuda': return {'skipped': 'CUDA only: compiling a network takes minutes on a CPU'}
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        t0 = time.time(); comp, mem_c, autocast = train_steps(S, dev, compile=True); total = time.time() - t0
    fell_back = list(dict.fromkeys(str(x.message) for x in w if 'compile=True ignored' in str(x.message)))
    eager, mem_e, _ = train_steps(S, dev)
    rows = [step_row(f"training.train(compile=True){' (fell back to eager)' if fell_back else ''}", comp, mem_c, S),
            step_row('training.train (eager)', eager, mem_e, S)]
    return dict(arch=S['arch'], batch=S['train_batch'], rows=rows, ratio_compiled_over_eager=rows[0]['img_per_s'] / rows[1]['img_per_s'],
                compile_run_seconds=round(total, 1), warnings=fell_back)


def fmt(v):
    if isinstance(v, float): return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return '-' if v is None else str(v)


def show(rows):
    cols = list(rows[0]); w = [max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols]
    print('  '.join(c.ljust(w[i]) for i, c in enumerate(cols)))
    for r in rows: print('  '.join(fmt(r.get(c)).ljust(w[i]) if i == 0 else fmt(r.get(c)).rjust(w[i]) for i, c in enumerate(cols)))


def verdict(met) -> str: return 'not judged' if met is None else ('met' if met else 'NOT met')


def save(out, path):
    "Write the JSON atomically (a temporary file, then a rename)."
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w') as f: json.dump(out, f, indent=1, default=str)
    os.replace(path + '.tmp', path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dry-run', action='store_true', help='the same code paths on the CPU at toy size (under a minute)')
    ap.add_argument('--json', default='', metavar='PATH', help='where the JSON goes (default: $OUT/gpu_check.json, or gpu_check[_dry_run].json in $TMPDIR)')
    ap.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (default: as it is)')
    ap.add_argument('--only', default='abcde', help="the sections to run, e.g. 'abe' (default: all)")
    ap.add_argument('--max-minutes', type=float, default=8.0, help='skip the sections not started after this many minutes')
    a = ap.parse_args(argv)
    t_all = time.time()
    if a.threads: torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available()
    dry = a.dry_run or not cuda
    dev = torch.device('cpu' if a.dry_run or not cuda else 'cuda')
    S = SIZES['dry' if dry else 'full']
    if not a.dry_run and not cuda: print("NOTE: no CUDA device here: running the dry-run sizes on the CPU (the figures say nothing about a GPU)")
    import randsmooth_nb
    out = {'dry_run': dry, 'device': dev.type, 'sizes': S, 'goals': GOALS,
           'machine': {'python': platform.python_version(), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                       'cpu_count': os.cpu_count(), 'gpu': torch.cuda.get_device_name(0) if cuda else None,
                       'randsmooth_nb': getattr(randsmooth_nb, '__version__', '?'), 'package_path': os.path.dirname(randsmooth_nb.__file__)}}
    print(f"gpu_check{' --dry-run' if dry else ''} on {out['machine']['gpu'] or 'CPU'} ({dev.type}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; sizes: {S}")
    path = a.json or os.path.join(os.environ.get('OUT') or tempfile.gettempdir(), 'gpu_check_dry_run.json' if dry else 'gpu_check.json')
    parts = (('a', '(a) training throughput', part_train), ('b', '(b) EoT-PGD against torchattacks EOTPGD', part_eot),
             ('c', '(c) Monte Carlo draws/s and peak GPU memory', part_mc), ('d', '(d) projected hours of every notebook (plan)', part_plan),
             ('e', '(e) torch.compile against eager training (optional, last)', part_compile))
    for key, title, fn in parts:
        if key not in a.only: continue
        print(f"\n== {title} ==")
        if time.time() - t_all > 60 * a.max_minutes:
            out[key] = {'skipped': f"not started: past {a.max_minutes} minutes"}; print(out[key]['skipped']); continue
        t0 = time.time()
        try: r = fn(S, dev)
        except Exception as e:
            r = {'error': f"{type(e).__name__}: {e}", 'traceback': traceback.format_exc()[-3000:]}
            print(f"ERROR: {r['error']}")
            if dev.type == 'cuda': torch.cuda.empty_cache()
        r['seconds'] = round(time.time() - t0, 1); out[key] = r
        out['wall_time_s'] = round(time.time() - t_all, 1); save(out, path)   # after every section: a killed run keeps what it did
        if 'error' in r: continue
        if 'skipped' in r: print(r['skipped']); continue
        if key == 'a':
            show(r['rows'])
            print(f"RATIO ours / bare: {r['ratio_ours_over_bare']:.3f}; ours reaches {100 * r['fraction_of_peak_ours']:.1f} % of "
                  f"{PEAK_TFLOPS:g} TFLOP/s (goal >= {100 * r['goal']:.0f} %: {verdict(None if dry else r['met'])})")
        elif key == 'b':
            show(r['rows']); print(f"rows per pass (ours): {r['rows_per_pass_ours']}")
            if r['note']: print(r['note'])
            else: print(f"RATIO time ours (bf16) / torchattacks: {r['ratio_bf16_over_torchattacks']:.3f}; ours (fp32) / torchattacks: "
                        f"{r['ratio_fp32_over_torchattacks']:.3f} (goal <= 1/3: {verdict(None if dry else r['met'])}); ours (bf16) / bare compute: "
                        f"{r['ratio_bf16_over_bare_compute']:.3f}; clean loss {r['clean_loss']:.3f}")
        elif key == 'c':
            show(r['rows']); print(f"rows per pass: {r['rows_per_pass']}")
        elif key == 'e':
            show(r['rows']); print(f"RATIO compiled / eager img/s: {r['ratio_compiled_over_eager']:.3f} (the compiled run took "
                                   f"{r['compile_run_seconds']} s with compiling){'; ' + '; '.join(r['warnings']) if r['warnings'] else ''}")
        else:
            print(f"whole suite ({r['preset']} preset): {fmt(r['suite_hours'])} h on this device" +
                  (f" plus what is not estimated: {'; '.join(dict.fromkeys(r['not_in_hours']))}" if r['not_in_hours'] else '') +
                  f" (goal <= {r['goal']:g} h on one H200: {verdict(None if dry else r['met'])})")
        print(f"({r['seconds']} s)")
    out['wall_time_s'] = round(time.time() - t_all, 1); save(out, path)
    print(f"\ngpu_check done in {out['wall_time_s']} s; JSON: {path}")
    return 1 if any('error' in out.get(k, {}) for k in 'abcde') else 0


if __name__ == '__main__':
    sys.exit(main())
