"""PGD with Expectation over Transformation: `randsmooth_nb.attacks.PGD` against torchattacks' EOTPGD, and against
the bare compute that any EoT-PGD must do (steps x eot forward+backward passes, batched at the best size).

    .venv/bin/python benchmarks/eot_attack.py [--quick] [--steps 20] [--eot 80] [--arch wrn-10-1] [--json PATH]

Same randomized network (Gaussian noise sd 0.25 on the input), same B=32 random images in [-1, 1] and random labels
out of 10 classes. Ours: PGD(eps=0.06, step=0.006, steps, eot) on [-1, 1] inputs; theirs: EOTPGD(eps=0.03,
alpha=0.003, steps, eot_iter=eot) on the network wrapped to take [0, 1] inputs (the same attack in their units).
Timing: `steps` repetitions of ONE step of each implementation, interleaved in rotating order (the same total work as
one full attack, robust to the drifting load of a shared machine); totals are `steps` x the median step.
The bare loop feeds `steps*eot*B` rows through forward + backward to the input, without noise or attack logic, in
passes of the batch size that the sweep finds fastest.
"""
from __future__ import annotations
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import _common as C
from randsmooth_nb.attacks import PGD
from randsmooth_nb.models import build_model
from randsmooth_nb.noise import default_max_batch, NoiseInjection, RandomizedNetwork
DEFAULT_MAX_BATCH = default_max_batch("cpu")   # the library default on the CPU these benchmarks run on

B, EPS, STEP = 32, 0.06, 0.006


class To01(nn.Module):
    "The network on [0, 1] inputs, as torchattacks expects (call .eval(): torchattacks restores the wrapper's mode)."
    def __init__(self, net): super().__init__(); self.net = net
    def forward(self, x01): return self.net(x01 * 2 - 1)


def fwd_bwd(base, xr, yr):
    xr = xr.detach().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(base(xr), yr, reduction='sum'), xr)
    return g


def main():
    ap = C.parser(__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=None, help='PGD steps (default 20; --quick: 4)')
    ap.add_argument('--eot', type=int, default=None, help='EoT draws per step (default 80; --quick: 16)')
    args = ap.parse_args()
    out = {'machine': C.setup(args)}
    steps = args.steps or (4 if args.quick else 20)
    eot = args.eot or (16 if args.quick else 80)
    full = (steps, eot) == (20, 80)
    import torchattacks

    net = RandomizedNetwork(build_model(args.arch), NoiseInjection('gaussian', 0.25)).eval()
    for p in net.parameters(): p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 32, 32, generator=g) * 2 - 1
    y = torch.randint(0, 10, (B,), generator=g)
    t_all = time.time()

    # 1. batch-size sweep of the bare forward+backward (no noise, no attack logic)
    sizes = [R for R in (32, 64, 128, 256, 512, 1024, 2048) if R <= eot * B]     # a step has eot*B rows
    per = max(sizes) if args.quick else 2048
    xb = torch.rand(max(sizes), 3, 32, 32, generator=g) * 2 - 1; yb = torch.randint(0, 10, (max(sizes),), generator=g)
    sweep_fns = {R: (lambda R=R: [fwd_bwd(net.base, xb[:R], yb[:R]) for _ in range(max(1, per // R))]) for R in sizes}
    sweep = C.interleaved(sweep_fns, warmup=1, reps=2)
    srows = [{'rows/pass': R, 'rows/s (fwd+bwd)': max(1, per // R) * R / C.median(ts), 'IQR/median': f"{100 * C.spread(ts):.0f}%"}
             for R, ts in sweep.items()]
    best = max(srows, key=lambda r: r['rows/s (fwd+bwd)'])['rows/pass']
    print(C.table(srows, list(srows[0]), f"Bare forward+backward-to-input throughput by rows per pass ({args.arch}, eval mode)"))
    print(f"best rows/pass: {best}; ours uses max(1, {DEFAULT_MAX_BATCH} // B) * B = {max(1, DEFAULT_MAX_BATCH // B) * B} rows/pass\n")

    # 2. one PGD step of each implementation (and the bare compute of one step), interleaved, `steps` repetitions:
    #    the same total work as one full attack of `steps` steps, but robust to the load of a shared machine
    one = lambda **kw: PGD(net, eps=EPS, step=STEP, steps=1, eot=eot, **kw)
    impl = {'ours: attacks.PGD': (one(), lambda a: a(x, y), max(1, DEFAULT_MAX_BATCH // B) * B),
            'torchattacks.EOTPGD': (torchattacks.EOTPGD(To01(net).eval(), eps=EPS / 2, alpha=STEP / 2, steps=1, eot_iter=eot),
                                    lambda a: a((x + 1) / 2, y) * 2 - 1, B),
            f'ours, PGD(max_batch={best})': (one(max_batch=best), lambda a: a(x, y), max(1, best // B) * B)}
    n_pass, rem = divmod(eot * B, best)
    xbest, ybest = xb[:best], yb[:best]
    def bare_step():
        assert not net.training                       # torchattacks restores the wrapper's mode: keep it eval
        for _ in range(n_pass): fwd_bwd(net.base, xbest, ybest)
        if rem: fwd_bwd(net.base, xb[:rem], yb[:rem])
    fns = {k: (lambda a=a, call=call: call(a)) for k, (a, call, _) in impl.items()}
    fns[f'bare fwd+bwd, {best} rows/pass'] = bare_step
    for f in fns.values(): f()                                     # warm-up
    times, outs, keys = {k: [] for k in fns}, {}, list(fns)
    for r in range(steps):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:     # rotate the order every repetition
            t0 = time.perf_counter(); o = fns[k](); times[k].append(time.perf_counter() - t0)
            if o is not None: outs[k] = o
    for xa in outs.values(): assert (xa - x).abs().max() <= EPS + 1e-5 and xa.abs().max() <= 1 + 1e-6

    with torch.no_grad():                             # same attack, same strength: mean EoT loss after one step
        ev = lambda xa: F.cross_entropy(net.forward_samples(xa, 64).reshape(64 * B, -1), y.repeat(64)).item()
        loss_clean = ev(x); losses = {k: ev(v) for k, v in outs.items()}

    total_rows = steps * eot * B
    rows = []
    for k, ts in times.items():
        rows.append({'implementation': k, 'rows/pass': impl[k][2] if k in impl else best, 's/step (median)': C.median(ts),
                     f'total s ({steps} x median)': steps * C.median(ts), 'sum of steps s': sum(ts),
                     'IQR/median': f"{100 * C.spread(ts):.0f}%", 'loss after 1 step': losses.get(k, float('nan'))})
    print(C.table(rows, list(rows[0]), f"EoT-PGD, B={B}, {steps} steps x EoT {eot} ({total_rows:,} rows forward+backward), "
                                       f"{args.arch}, gaussian sd 0.25, {torch.get_num_threads()} threads;\n{steps} interleaved repetitions of one "
                                       f"step each (rotating order); clean loss {loss_clean:.3f}"))
    if not full:
        print(f"NOTE: reduced workload ({steps} steps x EoT {eot}); the paper's setting is 20 x 80 (the default without --quick)")
    T = lambda i: rows[i]['s/step (median)']
    r_th, ovh, r_th_b, ovh_b = T(0) / T(1), T(0) / T(3) - 1, T(2) / T(1), T(2) / T(3) - 1
    print(f"RATIO time ours / torchattacks: {r_th:.3f}   (goal < 1: {'met' if r_th < 1 else 'NOT met'})")
    print(f"overhead of ours over the bare compute at the best batch size: {100 * ovh:+.1f}%   (goal <= 15%: {'met' if ovh <= 0.15 else 'NOT met'})")
    print(f"with max_batch={best} (the sweep's best): RATIO ours / torchattacks {r_th_b:.3f}, overhead over bare {100 * ovh_b:+.1f}%")
    out.update({'steps': steps, 'eot': eot, 'B': B, 'sweep': srows, 'best_rows_per_pass': best, 'rows': rows,
                'ratio_ours_over_torchattacks': r_th, 'overhead_over_bare': ovh,
                'ratio_ours_best_max_batch_over_torchattacks': r_th_b, 'overhead_ours_best_max_batch_over_bare': ovh_b,
                'step_times_s': times,
                'wall_time_s': round(time.time() - t_all, 1)})
    print(f"\n(total {out['wall_time_s']} s; load average at start {out['machine']['load_avg_1min_at_start']}: "
          f"on a shared CPU the numbers move by several %)")
    C.write_json(args.json, out)


if __name__ == '__main__':
    main()
