"""Training throughput of `randsmooth_nb.training.train` against a bare PyTorch loop, and Monte Carlo forward
throughput of `RandomizedNetwork.forward_samples` against one draw per pass, for several rows per pass.

    .venv/bin/python benchmarks/train_throughput.py [--quick] [--arch wrn-10-1] [--threads 2] [--json PATH]

Part 1 runs the real `training.train` (Batches over an in-memory ImageData of random uint8 images with crop+flip
augmentation, Gaussian noise sd 0.25 on the input, the piecewise lr schedule, SGD with momentum and weight decay,
channels-last, loss/accuracy bookkeeping) and times every step from the optimizer's step hook; the bare loop is the
same network without the noise wrapper on one preloaded float batch: forward, cross-entropy, backward, SGD step.
Part 2 times n=128 draws for B=16 inputs in eval mode under no_grad.
"""
from __future__ import annotations
import time

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
import torch.nn.functional as F

import _common as C
from randsmooth_nb.data import ImageData
from randsmooth_nb.models import build_model
from randsmooth_nb.noise import default_max_batch, NoiseInjection, RandomizedNetwork
DEFAULT_MAX_BATCH = default_max_batch("cpu")   # the library default on the CPU these benchmarks run on
from randsmooth_nb.training import TrainConfig, train

BATCH = 128


def ours_steps(cfg:TrainConfig, data:ImageData, warmup:int, steps:int) -> list[float]:
    "Per-step wall times of `training.train` (from consecutive optimizer steps), after `warmup` steps."
    stamps = []
    h = register_optimizer_step_post_hook(lambda *a: stamps.append(time.perf_counter()))
    try: res = train(cfg, data, stop_after_steps=warmup + steps, progress=False, device='cpu')
    finally: h.remove()
    assert res.step == warmup + steps and len(stamps) == warmup + steps
    return [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]


def bare_steps(arch:str, channels_last:bool, warmup:int, steps:int) -> list[float]:
    "Per-step wall times of a plain forward/backward/SGD loop on one preloaded batch, same network and optimizer."
    m = build_model(arch, dropout=0.3, leaky_slope=0.1).train()
    if channels_last: m = m.to(memory_format=torch.channels_last)
    decay = [p for p in m.parameters() if p.ndim > 1]; no_decay = [p for p in m.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{'params': decay, 'weight_decay': 4e-4}, {'params': no_decay, 'weight_decay': 0.0}], lr=0.1, momentum=0.9)
    x = torch.rand(BATCH, 3, 32, 32) * 2 - 1
    if channels_last: x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward(); opt.step()
        if i >= warmup: times.append(time.perf_counter() - t0)
    return times


def part_train(args, out):
    warmup, steps, reps = (2, 6, 3) if args.quick else (3, 15, 5)
    g = torch.Generator().manual_seed(0)
    n_img = BATCH * (warmup + steps + 2)          # one epoch covers every timed step: no epoch-end work in the timing
    data = ImageData(torch.randint(0, 256, (n_img, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n_img,), generator=g), [f'c{i}' for i in range(10)], 'random')
    cfg = TrainConfig(arch=args.arch, dist='gaussian', sd=0.25, epochs=100, batch_size=BATCH, seed=0)
    runs = {'ours: training.train (noise sd 0.25, augment, channels-last)': lambda: ours_steps(cfg, data, warmup, steps),
            'bare loop, channels-last': lambda: bare_steps(args.arch, True, warmup, steps),
            'bare loop, default layout': lambda: bare_steps(args.arch, False, warmup, steps)}
    times = {k: [] for k in runs}
    for _ in range(reps):                          # interleaved repetitions
        for k, f in runs.items(): times[k] += f()
    rows, names = [], list(runs)
    best_bare = max(BATCH / C.median(times[k]) for k in names[1:])
    for k in names:
        ips = BATCH / C.median(times[k])
        rows.append({'implementation': k, 'ms/step (median)': 1000 * C.median(times[k]), 'img/s': ips,
                     'IQR/median': f"{100 * C.spread(times[k]):.0f}%", 'steps timed': len(times[k])})
    ours = rows[0]['img/s']
    ratio_same, ratio_best = ours / rows[1]['img/s'], ours / best_bare
    print(C.table(rows, list(rows[0]), f"Part 1: training throughput, {args.arch}, batch {BATCH}, {torch.get_num_threads()} threads, "
                                       f"{reps} interleaved repetitions x {steps} steps after {warmup} warm-up steps"))
    print(f"RATIO ours / bare (same channels-last layout): {ratio_same:.3f}   (goal >= 0.9: {'met' if ratio_same >= 0.9 else 'NOT met'})")
    print(f"RATIO ours / fastest bare layout:              {ratio_best:.3f}")
    out['train'] = {'rows': rows, 'ratio_ours_over_bare_same_layout': ratio_same, 'ratio_ours_over_best_bare': ratio_best,
                    'times_s': times}


def part_samples(args, out):
    B, n = 16, 128
    reps = 3 if args.quick else 5
    net = RandomizedNetwork(build_model(args.arch), NoiseInjection('gaussian', 0.25)).eval()
    x = torch.rand(B, 3, 32, 32) * 2 - 1
    chunks = [4, 8, 16, 32, 64, 128]               # draws per pass -> rows per pass 64 ... 2048

    def sequential():
        with torch.no_grad(): return torch.stack([net(x) for _ in range(n)])
    fns = {'sequential (1 draw/pass)': sequential}
    for c in chunks:
        def f(c=c):
            with torch.no_grad(): return net.forward_samples(x, n, chunk=c)
        fns[f"forward_samples, {c * B} rows/pass"] = f
    with torch.no_grad(): assert net.forward_samples(x, n, chunk=8).shape == (n, B, 10)
    times = C.interleaved(fns, warmup=1, reps=reps)
    base = C.median(times['sequential (1 draw/pass)'])
    rows = []
    for k, ts in times.items():
        rows.append({'variant': k, 'rows/pass': B if k.startswith('seq') else int(k.split(', ')[1].split()[0]),
                     's (median)': C.median(ts), 'draws*inputs/s': n * B / C.median(ts), 'IQR/median': f"{100 * C.spread(ts):.0f}%",
                     'RATIO vs sequential': base / C.median(ts)})
    best = max(rows[1:], key=lambda r: r['draws*inputs/s'])
    default = next(r for r in rows if r['rows/pass'] == DEFAULT_MAX_BATCH)
    print()
    print(C.table(rows, list(rows[0]), f"Part 2: RandomizedNetwork.forward_samples, eval + no_grad, B={B} inputs, n={n} draws, "
                                       f"{args.arch}, {reps} interleaved repetitions"))
    rel = default['draws*inputs/s'] / best['draws*inputs/s']
    verdict = ('supports the default' if rel >= 0.95 else 'does NOT support the default') + \
              f" (default {DEFAULT_MAX_BATCH} rows reaches {100 * rel:.0f}% of the best; >= 95% counts as within noise)"
    print(f"best max_batch: {best['rows/pass']} rows/pass ({best['RATIO vs sequential']:.2f}x sequential); "
          f"noise.DEFAULT_MAX_BATCH = {DEFAULT_MAX_BATCH}: the measurement {verdict}")
    out['forward_samples'] = {'rows': rows, 'best_rows_per_pass': best['rows/pass'], 'default_max_batch': DEFAULT_MAX_BATCH,
                              'default_over_best': rel, 'times_s': times}


def main():
    ap = C.parser(__doc__.split('\n')[0])
    args = ap.parse_args()
    out = {'machine': C.setup(args)}
    t0 = time.time()
    part_train(args, out)
    part_samples(args, out)
    out['wall_time_s'] = round(time.time() - t0, 1)
    print(f"\n(total {out['wall_time_s']} s; load average at start {out['machine']['load_avg_1min_at_start']}: "
          f"on a shared CPU the numbers move by several %)")
    C.write_json(args.json, out)


if __name__ == '__main__':
    main()
