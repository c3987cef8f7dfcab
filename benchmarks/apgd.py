"""APGD with Expectation over Transformation: `randsmooth_nb.attacks.APGD` against torchattacks' APGD(eot_iter=...).

    .venv/bin/python benchmarks/apgd.py [--quick] [--steps 10] [--eot 20] [--arch wrn-10-1] [--json PATH]

Same randomized network (Gaussian noise sd 0.25 on the input), same B=32 random images in [-1, 1], each labelled with
the network's own majority vote over 64 draws. (torchattacks' APGD, like AutoAttack's, attacks only the inputs its first
noisy pass classifies correctly; with random labels that is about a tenth of them, and it then looks ~10x faster for
doing a tenth of the work. The fraction it attacks is printed.) Ours: APGD(eps=0.06, steps, eot, loss='ce') on [-1, 1] inputs; theirs: torchattacks.APGD(eps=0.03,
steps, eot_iter=eot, loss='ce') on the network wrapped to take [0, 1] inputs (the same attack in their units). Both do
(steps + 1) x eot forward+backward passes of the batch; torchattacks one draw per pass, ours as many draws per pass as
`max_batch` rows allow. Whole attacks are timed, interleaved in rotating order. Our bf16 variant is timed beside them
(its strength is measured separately, see README). The last column, the mean cross-entropy over 64 fresh draws at each
result, checks that the attacks do the same work (on an untrained network it says nothing about strength).
"""
from __future__ import annotations
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks

import _common as C
from randsmooth_nb.attacks import APGD
from randsmooth_nb.models import build_model
from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork, label_counts

B, EPS = 32, 0.06


class To01(nn.Module):
    "The network on [0, 1] inputs, as torchattacks expects."
    def __init__(self, net): super().__init__(); self.net = net
    def forward(self, x01): return self.net(x01 * 2 - 1)


def main():
    ap = C.parser(__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=None, help='APGD steps (default 10; --quick: 3)')
    ap.add_argument('--eot', type=int, default=None, help='EoT draws per step (default 20; --quick: 8)')
    ap.add_argument('--reps', type=int, default=None, help='interleaved repetitions (default 5; --quick: 3)')
    args = ap.parse_args()
    out = {'machine': C.setup(args)}
    steps, eot, reps = args.steps or (3 if args.quick else 10), args.eot or (8 if args.quick else 20), args.reps or (3 if args.quick else 5)
    t_all = time.time()
    net = RandomizedNetwork(build_model(args.arch, num_classes=10), NoiseInjection('gaussian', 0.25)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad(): votes = label_counts(net, x, 64)
    y = votes.argmax(1); agree = (votes.max(1).values / 64).mean().item()   # a single draw's chance to say y: what torchattacks attacks
    impl = {'ours: attacks.APGD': lambda: APGD(net, eps=EPS, steps=steps, eot=eot)(x, y),
            'torchattacks.APGD(eot_iter)': lambda: torchattacks.APGD(To01(net).eval(), eps=EPS / 2, steps=steps, eot_iter=eot,
                                                                     seed=0)((x + 1) / 2, y) * 2 - 1,
            "ours, precision='bf16'": lambda: APGD(net, eps=EPS, steps=steps, eot=eot, precision='bf16')(x, y)}
    for f in impl.values(): f()                                   # warm-up
    times, outs, keys = {k: [] for k in impl}, {}, list(impl)
    for r in range(reps):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter(); outs[k] = impl[k](); times[k].append(time.perf_counter() - t0)
    for xa in outs.values(): assert (xa - x).abs().max() <= EPS + 1e-5 and xa.abs().max() <= 1 + 1e-6
    with torch.no_grad():
        ev = lambda xa: F.cross_entropy(net.forward_samples(xa, 64).reshape(64 * B, -1), y.repeat(64)).item()
        loss_clean = ev(x); losses = {k: ev(v) for k, v in outs.items()}
    rows = [{'implementation': k, 's/attack (median)': C.median(ts), 'IQR/median': f"{100 * C.spread(ts):.0f}%",
             'EoT loss at result': losses[k]} for k, ts in times.items()]
    print(C.table(rows, list(rows[0]), f"APGD-CE, B={B}, {steps} steps x EoT {eot} ({(steps + 1) * eot * B:,} rows forward+backward), "
                                       f"{args.arch}, gaussian sd 0.25, {torch.get_num_threads()} threads; {reps} interleaved "
                                       f"repetitions; clean EoT loss {loss_clean:.3f}; torchattacks attacks the ~{agree:.0%} of inputs "
                                       f"its first noisy pass gets right"))
    T = lambda i: rows[i]['s/attack (median)']
    r, rb = T(0) / T(1), T(2) / T(1)
    print(f"RATIO time ours / torchattacks: {r:.3f}   (goal <= 0.8: {'met' if r <= 0.8 else 'NOT met'})")
    print(f"RATIO time ours(bf16) / torchattacks: {rb:.3f}")
    out.update({'torchattacks_attacked_fraction_expected': agree, 'steps': steps, 'eot': eot, 'B': B, 'rows': rows, 'ratio_ours_over_torchattacks': r,
                'ratio_ours_bf16_over_torchattacks': rb, 'times_s': times, 'wall_time_s': round(time.time() - t_all, 1)})
    print(f"\n(total {out['wall_time_s']} s; load average at start {out['machine']['load_avg_1min_at_start']}: "
          f"on a shared CPU the numbers move by several %)")
    C.write_json(args.json, out)


if __name__ == '__main__':
    main()
