"""APGD in bf16 against APGD in fp32 on a trained quick-preset network: the same strength within Monte Carlo error?

    .venv/bin/python benchmarks/apgd_precision.py --data-dir ~/.cache/randsmooth/cifar10-jpeg [--model gaussian:0.5]
        [--n 200] [--draws 50] [--steps S] [--eot E] [--json PATH]

Issue 11 allows bf16 for an attack only where its strength stays within Monte Carlo error of fp32. The network is the
quick preset's own (`Experiment('exp_table1', preset='quick')`, from the model cache: it is trained first if missing).
Attacks: APGD-CE and APGD-DLR at the quick preset's budget (`apgd_steps`, `apgd_eot`, radius `pgd_eps`), each in fp32
and in bf16, on the same `--n` test images, the two precisions interleaved per loss. Every result is scored the same way:
expected accuracy over `--draws` fresh fp32 draws (Definition 5), with its standard error over the inputs. The
difference bf16 - fp32 is paired (same inputs), so its standard error is that of the per-input differences.
"""
from __future__ import annotations
import json, math, time

import torch

import _common as C
from randsmooth_nb.attacks import APGD
from randsmooth_nb.experiments import Experiment
from randsmooth_nb.sanity import expected_correct


def main():
    ap = C.parser(__doc__.split('\n')[0])
    ap.add_argument('--data-dir', required=True, help='CIFAR-10 directory (torchvision layout or ImageFolder)')
    ap.add_argument('--model', default='gaussian:0.5', help='DIST:SD of a quick-preset network (default gaussian:0.5)')
    ap.add_argument('--n', type=int, default=200, help='test images attacked (default 200)')
    ap.add_argument('--draws', type=int, default=50, help='fresh fp32 draws scoring each result (default 50)')
    ap.add_argument('--steps', type=int, default=None, help="APGD steps (default: the quick preset's)")
    ap.add_argument('--eot', type=int, default=None, help="EoT draws per step (default: the quick preset's)")
    args = ap.parse_args()
    if args.n < 1 or args.draws < 1: raise SystemExit('--n and --draws must be >= 1')
    dist, sd = args.model.split(':') if ':' in args.model else (None, None)
    if dist is None: raise SystemExit(f"--model must be DIST:SD, e.g. gaussian:0.5, got {args.model!r}")
    out = {'machine': C.setup(args)}
    ex = Experiment('exp_table1', {'preset': 'quick', 'seed': 0, 'data_dir': args.data_dir, 'out_dir': '/tmp/apgd_precision'})
    m = ex.model(dist, float(sd)).eval()
    x, y = ex.test_xy(args.n)
    c = ex.cfg; steps, eot = args.steps or c['apgd_steps'], args.eot or c['apgd_eot']
    rows, per_input = [], {}
    for loss in ('ce', 'dlr'):
        for prec in ('fp32', 'bf16'):
            atk = APGD(m, eps=c['pgd_eps'], steps=steps, eot=eot, loss=loss, precision=prec)
            torch.manual_seed(0); t0 = time.time()
            xa = torch.cat([atk(x[i:i + 100], y[i:i + 100]) for i in range(0, len(x), 100)])
            dt = time.time() - t0
            torch.manual_seed(1)
            p = expected_correct(m, xa, y, n_draws=args.draws).double()
            per_input[(loss, prec)] = p
            rows.append({'attack': f"APGD-{loss.upper()} {prec}", 'expected acc': p.mean().item(),
                         'se': p.std().item() / math.sqrt(len(p)), 'seconds': round(dt, 1)})
    print(C.table(rows, list(rows[0]), f"APGD at the quick budget ({steps} steps, EoT {eot}, eps {c['pgd_eps']}), quick-preset "
                                       f"{args.model} network, {len(x)} CIFAR-10 test images, scored over {args.draws} fp32 draws"))
    out['results'] = rows; out['verdicts'] = {}
    for loss in ('ce', 'dlr'):
        d = per_input[(loss, 'bf16')] - per_input[(loss, 'fp32')]
        diff, se = d.mean().item(), d.std().item() / math.sqrt(len(d))
        same = abs(diff) <= 2 * se + 1e-12
        t = {r['attack']: r['seconds'] for r in rows}
        speed = t[f"APGD-{loss.upper()} fp32"] / max(t[f"APGD-{loss.upper()} bf16"], 1e-9)
        print(f"APGD-{loss.upper()}: bf16 - fp32 = {diff:+.4f} (paired se {se:.4f}): "
              f"{'the same strength within 2 se' if same else 'DIFFERENT beyond 2 se'}; bf16 {speed:.2f}x faster")
        out['verdicts'][loss] = {'diff': diff, 'se': se, 'same_within_2se': same, 'speedup': speed}
    out.update({'model': args.model, 'n': len(x), 'draws': args.draws, 'steps': steps, 'eot': eot, 'eps': c['pgd_eps']})
    C.write_json(args.json, out)


if __name__ == '__main__':
    main()
