"""Minimum-norm attacks: `attacks.CarliniWagnerL2` / `attacks.EAD` against torchattacks' CW / EADL1.

    .venv/bin/python benchmarks/min_norm.py [--quick] [--steps 60] [--arch wrn-10-1] [--json PATH]

Undefended network (no noise, EoT 1), B=32 random images in [-1, 1], labelled with the network's own predictions (clean
accuracy 100 %: every input must be moved).
Part 1, equal steps, early abort off on both sides: ours with one binary-search step of `steps` iterations and
abort_early=False, theirs CW(c, steps) / EADL1(binary_search_steps=1, max_iterations=steps, abort_early=False).
torchattacks' CW always stops early when its loss rises: the forward passes of every call are counted, and the
figure compared is seconds per iteration. Part 2, the paper's budget with defaults (9 x 60, early abort on; C&W starts
at initial_const='auto', EAD at c0 = 1e-3):
time and success rate of ours against EADL1 (abort_early=True) at the same budget, and against torchattacks' CW
(no binary search: one c) with 60 steps. Units: torchattacks works in [0, 1]: c = 4 c01, beta = 2 beta01.
Whole attacks are timed, interleaved in rotating order.
Part 3, the time to break the undefended network: a probe inside the network marks, per input, the first forward pass
that misclassifies it; the time from the call's start to the pass at which the last input gets there is the time until
the attack holds an adversarial example for every input (both sides keep an example as soon as a pass sees it wrong).
Ours at defaults against EADL1 at the paper's budget and against torchattacks' CW at c = 1, 10, 100 (60 steps; the
fastest that breaks every input is the reference).
"""
from __future__ import annotations
import time

import torch
import torch.nn as nn
import torchattacks

import _common as C
from randsmooth_nb.attacks import EAD, CarliniWagnerL2
from randsmooth_nb.models import build_model
from randsmooth_nb.noise import RandomizedNetwork

B = 32


class To01(nn.Module):
    "The network on [0, 1] inputs, counting forward passes."
    def __init__(self, net): super().__init__(); self.net, self.calls = net, 0
    def forward(self, x01): self.calls += 1; return self.net(x01 * 2 - 1)


class Probe(nn.Module):
    "The network, marking per input the first forward pass that misclassifies it (full-batch passes only)."
    def __init__(self, net, y): super().__init__(); self.net, self.y = net, y; self.start()
    def start(self):
        self.t0, self.fooled, self.passes, self.t_all, self.passes_all = time.perf_counter(), torch.zeros_like(self.y, dtype=torch.bool), 0, None, None
    def forward(self, x):
        z = self.net(x); self.passes += 1
        if self.t_all is None and z.shape[0] == len(self.y):
            self.fooled |= z.detach().argmax(1) != self.y
            if bool(self.fooled.all()): self.t_all, self.passes_all = time.perf_counter() - self.t0, self.passes
        return z


def run(impls:dict, reps:int) -> tuple:
    for f in impls.values(): f()
    times, outs, keys = {k: [] for k in impls}, {}, list(impls)
    for r in range(reps):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter(); outs[k] = impls[k](); times[k].append(time.perf_counter() - t0)
    return times, outs


def main():
    ap = C.parser(__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=None, help='iterations in part 1 (default 60; --quick: 10)')
    ap.add_argument('--reps', type=int, default=None, help='interleaved repetitions (default 5; --quick: 3)')
    ap.add_argument('--skip-paper', action='store_true', help='skip part 2 (paper budget; always skipped with --quick)')
    args = ap.parse_args()
    out = {'machine': C.setup(args)}
    steps, reps = args.steps or (10 if args.quick else 60), args.reps or (3 if args.quick else 5)
    t_all = time.time()
    base = build_model(args.arch, num_classes=10).eval()
    net = RandomizedNetwork(base).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad(): y = net(x).argmax(1)
    to01 = To01(net).eval(); x01 = (x + 1) / 2
    fooled = lambda xa: (net(xa).argmax(1) != y).double().mean().item()

    # part 1: equal steps, abort off; per-iteration time (torchattacks' CW may stop early: its passes are counted)
    c01, lr = 1.0, 0.01
    state = {}
    def theirs_cw():
        to01.calls = 0; xa = torchattacks.CW(to01, c=c01, steps=steps, lr=lr)(x01, y) * 2 - 1
        state['cw_iters'] = to01.calls; return xa
    impl = {'ours: CarliniWagnerL2': lambda: CarliniWagnerL2(net, steps=steps, binary_search_steps=1, initial_const=4 * c01, lr=lr,
                                                             eot=1, abort_early=False)(x, y),
            'torchattacks.CW': theirs_cw,
            'ours: EAD (L1 rule)': lambda: EAD(net, beta=2 * 0.01, steps=steps, binary_search_steps=1, initial_const=4 * c01, lr=lr,
                                               decision_rule='L1', eot=1, abort_early=False)(x, y),
            'torchattacks.EADL1': lambda: torchattacks.EADL1(to01, kappa=0, lr=lr, binary_search_steps=1, max_iterations=steps,
                                                             abort_early=False, initial_const=c01, beta=0.01)(x01, y) * 2 - 1}
    times, outs = run(impl, reps)
    iters = {'ours: CarliniWagnerL2': steps, 'torchattacks.CW': state['cw_iters'], 'ours: EAD (L1 rule)': steps, 'torchattacks.EADL1': steps}
    rows = [{'implementation': k, 'iterations': iters[k], 's/call (median)': C.median(ts), 'ms/iteration': 1000 * C.median(ts) / iters[k],
             'IQR/median': f"{100 * C.spread(ts):.0f}%", 'fooled': fooled(outs[k])} for k, ts in times.items()]
    print(C.table(rows, list(rows[0]), f"Part 1: equal steps ({steps}), early abort off, {args.arch} without noise, B={B}, "
                                       f"{torch.get_num_threads()} threads, {reps} interleaved repetitions"))
    P = lambda i: rows[i]['ms/iteration']
    r_cw, r_ead = P(0) / P(1), P(2) / P(3)
    print(f"RATIO time/iteration ours / torchattacks: C&W {r_cw:.3f}, EAD {r_ead:.3f}   (goal <= 1.0: "
          f"{'met' if max(r_cw, r_ead) <= 1 else 'NOT met'})")
    out.update({'steps': steps, 'part1': rows, 'ratio_cw': r_cw, 'ratio_ead': r_ead})

    if not (args.skip_paper or args.quick):   # part 2: the paper's budget, defaults (early abort on)
        its = {}
        def ours(A):
            a = A(net, eot=1); xa = a(x, y); its[A.__name__] = a.last_iterations; return xa
        impl2 = {'ours: EAD() defaults (9 x 60, abort)': lambda: ours(EAD),
                 'torchattacks.EADL1 (9 x 60, abort_early)': lambda: torchattacks.EADL1(to01, binary_search_steps=9, max_iterations=60,
                                                                          abort_early=True, initial_const=1e-3 / 4, beta=0.005)(x01, y) * 2 - 1,
                 'ours: CarliniWagnerL2() defaults (9 x 60, abort)': lambda: ours(CarliniWagnerL2),
                 'torchattacks.CW(c=1, steps=60)': lambda: torchattacks.CW(to01, c=1.0, steps=60)(x01, y) * 2 - 1}
        times2, outs2 = run(impl2, max(2, reps - 2))
        rows2 = [{'implementation': k, 's (median)': C.median(ts), 'IQR/median': f"{100 * C.spread(ts):.0f}%", 'fooled': fooled(outs2[k]),
                  'median l2 (fooled)': (outs2[k] - x).flatten(1).norm(dim=1)[net(outs2[k]).argmax(1) != y].median().item()}
                 for k, ts in times2.items()]
        print(C.table(rows2, list(rows2[0]), "\nPart 2: time to break the undefended network at the paper's budget, defaults"))
        print(f"our iterations per binary-search step (early abort): {its}")
        Q = lambda i: rows2[i]['s (median)']
        print(f"RATIO time ours / torchattacks at the paper budget: EAD {Q(0) / Q(1):.3f}, C&W {Q(2) / Q(3):.3f}   (goal <= 1.0)")
        out.update({'part2': rows2, 'our_iterations_per_search_step': its, 'ratio_paper_ead': Q(0) / Q(1), 'ratio_paper_cw': Q(2) / Q(3)})
        # part 3: time until every input is fooled, read off the attacks' own forward passes: a probe inside the network
        # marks, per input, the first pass whose prediction is wrong and records when the last input got there. Both
        # attacks keep an example as soon as a pass sees it misclassified, so this is the time until each has broken all.
        probe = Probe(base, y)
        pnet = RandomizedNetwork(probe).eval(); p01 = To01(pnet).eval()
        impl3 = {'ours: CarliniWagnerL2() defaults (auto start)': lambda: CarliniWagnerL2(pnet, eot=1)(x, y),
                 'ours: CarliniWagnerL2(initial_const=1e-3)': lambda: CarliniWagnerL2(pnet, eot=1, initial_const=1e-3)(x, y),
                 'ours: EAD() defaults': lambda: EAD(pnet, eot=1)(x, y)}
        impl3['torchattacks.EADL1 (9 x 60, abort_early)'] = lambda: torchattacks.EADL1(p01, binary_search_steps=9, max_iterations=60,
                                                                          abort_early=True, initial_const=1e-3 / 4, beta=0.005)(x01, y)
        impl3.update({f'torchattacks.CW(c={c:g}, steps=60)': (lambda c=c: torchattacks.CW(p01, c=c, steps=60)(x01, y)) for c in (1.0, 10.0, 100.0)})
        ttb, npass, keys3 = {k: [] for k in impl3}, {}, list(impl3)
        for r in range(max(2, reps - 2)):
            for k in keys3[r % len(keys3):] + keys3[:r % len(keys3)]:
                probe.start(); impl3[k](); ttb[k].append(probe.t_all); npass[k] = probe.passes_all
        rows3 = [{'implementation': k, 'passes until all fooled': npass[k] if npass[k] is not None else 'never',
                  's until all fooled (median)': C.median(ts) if None not in ts else float('nan')} for k, ts in ttb.items()]
        print(C.table(rows3, list(rows3[0]), "\nPart 3: time until every input is fooled (a probe in the network: the pass at which "
                                             "the last input is first misclassified)"))
        t3 = {r['implementation']: r['s until all fooled (median)'] for r in rows3}
        e3 = t3['ours: EAD() defaults'] / t3['torchattacks.EADL1 (9 x 60, abort_early)']
        print(f"RATIO time to break all, ours EAD / torchattacks EADL1 at the paper budget: {e3:.3f}   (goal <= 1.0: {'met' if e3 <= 1 else 'NOT met'})")
        out['ratio_time_to_break_ead'] = e3
        brk = [k for k in keys3 if k.startswith('torchattacks.CW') and npass[k] is not None]
        if brk:
            best = min(brk, key=lambda k: t3[k])
            r3 = t3[keys3[0]] / t3[best]
            print(f"RATIO time to break all, ours C&W (defaults) / the fastest torchattacks CW that breaks all ({best}): {r3:.3f}   "
                  f"(goal <= 1.0: {'met' if r3 <= 1 else 'NOT met'})")
            out['ratio_time_to_break_cw'] = r3
        else: print("torchattacks CW breaks every input at none of c = 1, 10, 100 within 60 steps")
        out['part3'] = rows3
    out['wall_time_s'] = round(time.time() - t_all, 1)
    print(f"\n(total {out['wall_time_s']} s; load average at start {out['machine']['load_avg_1min_at_start']}: "
          f"on a shared CPU the numbers move by several %)")
    C.write_json(args.json, out)


if __name__ == '__main__':
    main()
