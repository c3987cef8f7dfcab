"""Memory layout of a loaded network: channels-last weights (what `training.get_model` returns) against the default layout.

    .venv/bin/python benchmarks/model_layout.py [--quick] [--threads 2] [--json PATH]

Until 2026-12-05 `get_model` returned a cached network in PyTorch's default (NCHW) layout, although `train` runs it in
channels-last; every Monte Carlo count and attack of the experiment notebooks then ran on NCHW weights. For each
architecture (untrained, Gaussian noise sd 0.25 on the input, B = 50 random images in [-1, 1]) this times, interleaved:
- `noise.label_counts(model, x, n=200)`: Monte Carlo counting (inference mode, fp32);
- one step of `attacks.PGD(steps=1, eot=2)`: EoT gradients (fp32; the attacks feed channels-last inputs either way).
The weights are the same numbers in both layouts; only their memory order differs.
"""
from __future__ import annotations
import copy, time

import torch

import _common as C
from randsmooth_nb.attacks import PGD
from randsmooth_nb.models import build_model
from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork, label_counts

B, N = 50, 200


def main():
    ap = C.parser(__doc__.split('\n')[0])
    args = ap.parse_args()
    out = {'machine': C.setup(args), 'rows': []}
    reps, archs = (2, ("fast-64-128-128",)) if args.quick else (3, ('fast-64-128-128', 'wrn-10-1'))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 32, 32, generator=g) * 2 - 1; y = torch.arange(B) % 10
    t0 = time.time()
    for arch in archs:
        nchw = RandomizedNetwork(build_model(arch), NoiseInjection('gaussian', 0.25)).eval()
        cl = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
        assert all(torch.equal(a, b) for a, b in zip(nchw.state_dict().values(), cl.state_dict().values()))
        fns = {}
        for name, m in (('default (NCHW) weights', nchw), ('channels-last weights', cl)):
            fns[f'label_counts, {name}'] = lambda m=m: label_counts(m, x, N)
            fns[f'PGD step (EoT 2), {name}'] = lambda m=m: PGD(m, eps=0.03, steps=1, eot=2)(x, y)
        times = C.interleaved(fns, warmup=1, reps=reps)
        rows = [{'arch': arch, 'what': k, 's (median)': C.median(ts), 'IQR/median': f"{100 * C.spread(ts):.0f}%"} for k, ts in times.items()]
        print(C.table(rows, list(rows[0]), f"{arch}: B={B}, n={N} draws; {torch.get_num_threads()} threads, {reps} interleaved repetitions"))
        for what in ('label_counts', 'PGD step (EoT 2)'):
            r = C.median(times[f'{what}, channels-last weights']) / C.median(times[f'{what}, default (NCHW) weights'])
            print(f"RATIO {arch} {what}: time channels-last / default layout {r:.3f}")
            out['rows'].append({'arch': arch, 'what': what, 'ratio_cl_over_nchw': r})
        out[arch] = times
    out['wall_time_s'] = round(time.time() - t0, 1)
    print(f"(total {out['wall_time_s']} s; load average at start {out['machine']['load_avg_1min_at_start']})")
    C.write_json(args.json, out)


if __name__ == '__main__':
    main()
