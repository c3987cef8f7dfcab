"""Shared helpers of the benchmark scripts: argument parsing, timing, tables, JSON output (not part of the package)."""
from __future__ import annotations
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path

import torch


def parser(description:str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument('--quick', action='store_true', help='short run (fewer repetitions / smaller workload)')
    ap.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (default 2)')
    ap.add_argument('--arch', default='wrn-10-1', help='model from randsmooth_nb.models.build_model (default wrn-10-1)')
    ap.add_argument('--json', default='', metavar='PATH', help='also write the results as JSON to PATH')
    ap.add_argument('--mallopt', action='store_true',
                    help="raise glibc's mmap/trim thresholds in this process, so that freed activation buffers are reused "
                         "instead of being returned to the OS and page-faulted in again on the next pass")
    return ap


def tune_malloc() -> bool:
    "glibc mallopt(M_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD) to 2 GiB; False where that is not possible."
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        return bool(libc.mallopt(-3, ctypes.c_int(2**31 - 1))) and bool(libc.mallopt(-1, ctypes.c_int(2**31 - 1)))
    except (OSError, AttributeError): return False


def setup(args) -> dict:
    "Fix threads and seeds; return a description of the machine."
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tuned = tune_malloc() if args.mallopt else False
    if args.mallopt and not tuned: print("warning: --mallopt: glibc mallopt not available here; running with the default allocator")
    try: load = os.getloadavg()[0]
    except OSError: load = None
    return {'python': platform.python_version(), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'cpu_count': os.cpu_count(), 'machine': platform.machine(), 'load_avg_1min_at_start': load,
            'argv': sys.argv[1:], 'arch': args.arch, 'quick': args.quick, 'malloc_tuned': tuned}


def timeit(fn, warmup:int=1, reps:int=5) -> list[float]:
    "Wall-clock seconds of `reps` calls of `fn` after `warmup` untimed calls."
    for _ in range(warmup): fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); out.append(time.perf_counter() - t0)
    return out


def interleaved(fns:dict, warmup:int=1, reps:int=5) -> dict:
    "Time several callables alternately (A B A B ...) so that drifting machine load hits all of them alike."
    for f in fns.values():
        for _ in range(warmup): f()
    out = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter(); f(); out[k].append(time.perf_counter() - t0)
    return out


def median(xs): return statistics.median(xs)

def spread(xs):
    "Relative interquartile range (q75-q25)/median: a noise indicator that one outlier does not dominate."
    m = median(xs)
    if len(xs) < 2 or not m: return float('nan')
    q = statistics.quantiles(xs, n=4, method='inclusive')
    return (q[2] - q[0]) / m


def table(rows:list, cols:list, title:str='') -> str:
    "A plain fixed-width text table."
    fmt = lambda v: f"{v:,.3g}" if isinstance(v, float) and abs(v) < 1000 else (f"{v:,.0f}" if isinstance(v, float) else str(v))
    cells = [[fmt(r.get(c, '')) for c in cols] for r in rows]
    w = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ([title] if title else []) + ['  '.join(c.ljust(w[i]) for i, c in enumerate(cols)),
                                          '  '.join('-' * x for x in w)]
    lines += ['  '.join(x[i].rjust(w[i]) if i else x[i].ljust(w[i]) for i in range(len(cols))) for x in cells]
    return '\n'.join(lines)


def write_json(path:str, obj:dict):
    if not path: return
    p = Path(path); p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1, default=float) + '\n')
    print(f"results written to {p}")
