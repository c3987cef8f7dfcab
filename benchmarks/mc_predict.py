"""Monte Carlo prediction: draws/s of `evaluation.predict_distribution` against bare batched inference.

    .venv/bin/python benchmarks/mc_predict.py [--quick] [--arch wrn-10-1] [--threads 2] [--json PATH]

Same randomized network (Gaussian noise sd 0.25 on the input), B=64 random images in [-1, 1], n=128 draws each.
Ours: `predict_distribution(model, x, n)` (noise, argmax, label counting, Clopper-Pearson intervals), default
`max_batch` = noise.DEFAULT_MAX_BATCH rows per pass. Bare: the same number of forward rows through the base network
under torch.inference_mode, in passes of the same size, on a preloaded batch, without noise or counting. A third
row adds only the noise (RandomizedNetwork.forward on the same preloaded rows), to show what the noise itself costs.
"""
from __future__ import annotations
import time

import torch

import _common as C
from randsmooth_nb.evaluation import predict_distribution
from randsmooth_nb.models import build_model
from randsmooth_nb.noise import default_max_batch, NoiseInjection, RandomizedNetwork
DEFAULT_MAX_BATCH = default_max_batch("cpu")   # the library default on the CPU these benchmarks run on

B, N = 64, 128


def main():
    ap = C.parser(__doc__.split('\n')[0])
    ap.add_argument('--alt-max-batch', type=int, default=128, help='also time predict_distribution with this max_batch (default 128)')
    args = ap.parse_args()
    out = {'machine': C.setup(args)}
    reps = 3 if args.quick else 7
    net = RandomizedNetwork(build_model(args.arch), NoiseInjection('gaussian', 0.25)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 32, 32, generator=g) * 2 - 1
    draws_per_pass = max(1, DEFAULT_MAX_BATCH // B); rows = draws_per_pass * B
    n_pass, rem = divmod(N, draws_per_pass)
    xr = x.repeat(draws_per_pass, 1, 1, 1)          # the rows of one pass, preloaded

    def ours():
        ld = predict_distribution(net, x, N, batch_size=B)
        assert int(ld.counts.sum()) == B * N
    def bare(f):
        def run():
            with torch.inference_mode():
                for _ in range(n_pass): f(xr)
                if rem: f(xr[:rem * B])
        return run
    alt = args.alt_max_batch
    def ours_alt(): predict_distribution(net, x, N, batch_size=B, max_batch=alt)
    fns = {'ours: evaluation.predict_distribution': ours, 'bare: base network only': bare(net.base),
           'bare + noise (RandomizedNetwork.forward)': bare(net), f'ours, max_batch={alt}': ours_alt}
    t0 = time.time()
    times = C.interleaved(fns, warmup=1, reps=reps)
    res = []
    for k, ts in times.items():
        res.append({'implementation': k, 'rows/pass': rows if 'max_batch=' not in k else max(1, alt // B) * B, 's (median)': C.median(ts), 'draws/s': B * N / C.median(ts),
                    'IQR/median': f"{100 * C.spread(ts):.0f}%"})
    ratio, ratio_noise = res[0]['draws/s'] / res[1]['draws/s'], res[0]['draws/s'] / res[2]['draws/s']
    print(C.table(res, list(res[0]), f"Monte Carlo prediction, {args.arch}, B={B} inputs x n={N} draws ({B * N:,} forward rows), "
                                     f"gaussian sd 0.25, {torch.get_num_threads()} threads, {reps} interleaved repetitions"))
    print(f"RATIO draws/s ours / bare:          {ratio:.3f}   (goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
    print(f"RATIO draws/s ours / bare + noise:  {ratio_noise:.3f}   (what counting and bookkeeping cost)")
    print(f"RATIO draws/s ours(max_batch={alt}) / ours(default {DEFAULT_MAX_BATCH}): {res[3]['draws/s'] / res[0]['draws/s']:.3f}")
    out.update({'B': B, 'n': N, 'rows_per_pass': rows, 'rows': res, 'ratio_ours_over_bare': ratio,
                'ratio_ours_over_bare_with_noise': ratio_noise, 'ratio_alt_max_batch_over_default': res[3]['draws/s'] / res[0]['draws/s'], 'times_s': times, 'wall_time_s': round(time.time() - t0, 1)})
    print(f"\n(total {out['wall_time_s']} s; load average at start {out['machine']['load_avg_1min_at_start']}: "
          f"on a shared CPU the numbers move by several %)")
    C.write_json(args.json, out)


if __name__ == '__main__':
    main()
