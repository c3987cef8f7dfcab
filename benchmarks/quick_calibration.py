"""Calibration of the `quick` preset (issue 12): accuracy and time of candidate networks and attack budgets.

    .venv/bin/python benchmarks/quick_calibration.py train [--data-dir D] [--cifar100-dir D] [--only NAME,...]
    .venv/bin/python benchmarks/quick_calibration.py attack MODEL SPEC [SPEC ...]

`train` trains (or loads from the model cache, through `training.get_model`) the fast-recipe candidates: no noise,
Laplace sd 0.5, Madry et al. with PGD-2, CIFAR-100 without noise; it prints clean accuracy on 2,000 test images
(expected accuracy over 20 draws for a noisy network) and PGD-20 accuracy on 500 images for the deterministic ones.
`attack` runs attack budgets on 200 test images of a cached candidate. MODEL: `none` or `<dist>:<sd>`. SPEC:
`cw,BS,STEPS,C0[,EOT[,PREC]]`, `ead,BS,STEPS,C0[,EOT[,PREC]]`, `pgd,STEPS,EOT,PREC`, `apgd,STEPS,EOT,LOSS,PREC`, e.g.
`cw,4,20,1.0,16,bf16`. Each result (accuracy, standard error, seconds) is printed as a JSON line and appended to
`--out` (default quick_calibration.jsonl). Run one at a time: two torch processes on 2 cores slow each other ~5x.
The figures of the 2026-12-02 run are in nbs/12_experiments.ipynb (the calibration table).
"""
from __future__ import annotations
import argparse, json, time
from pathlib import Path

import torch
from randsmooth_nb.attacks import APGD, EAD, PGD, CarliniWagnerL2
from randsmooth_nb.data import load_dataset, to_model_range
from randsmooth_nb.sanity import expected_correct, mean_se
from randsmooth_nb.training import FAST_RECIPE, fast_config, get_model, madry_config

CACHE = Path('~/.cache/randsmooth').expanduser()
CANDIDATES = {  # name -> (dataset, training-config overrides of FAST_RECIPE); the quick preset trains the first four
    'c10-none': ('cifar10', dict(num_classes=10)),
    'c10-laplace0.5': ('cifar10', dict(num_classes=10, dist='laplace', sd=0.5)),
    'c10-madry-pgd2': ('cifar10', dict(num_classes=10, madry=True, adv_steps=2, adv_step=0.625 * 16 / 255)),
    'c100-none': ('cifar100', dict(num_classes=100)),
    # wider last group (64/128/256): nearly free on this CPU (its convolutions run at 8x8 and 4x4); 2026-12-06 candidates
    'c10-none-w256': ('cifar10', dict(num_classes=10, arch='fast-64-128-256')),
    'c100-none-w256': ('cifar100', dict(num_classes=100, arch='fast-64-128-256')),
}


def record(out:Path, rec:dict):
    print(json.dumps(rec), flush=True)
    with out.open('a') as f: f.write(json.dumps(rec) + '\n')


def train(args):
    dirs = {'cifar10': args.data_dir, 'cifar100': args.cifar100_dir}
    only = args.only.split(',') if args.only else list(CANDIDATES)
    if set(only) - set(CANDIDATES): raise SystemExit(f"unknown candidate(s) {sorted(set(only) - set(CANDIDATES))}; valid: {', '.join(CANDIDATES)}")
    for name in only:
        ds, kw = CANDIDATES[name]
        tr, te = load_dataset(ds, 'train', dirs[ds]), load_dataset(ds, 'test', dirs[ds])
        kw = dict(kw, seed=args.seed); madry = kw.pop('madry', False)
        cfg = madry_config(**{**FAST_RECIPE, **kw}) if madry else fast_config(**kw)
        t0 = time.time(); res = get_model(cfg, tr, te); m = res.model.eval()
        s = te.subset(2000, seed=0); x, y = to_model_range(s.x), s.y
        acc, se = mean_se(expected_correct(m, x, y, n_draws=1 if cfg.sd == 0 else 20, batch_size=250))
        rec = dict(name=name, status=res.status, train_time_s=round(res.train_time_s, 1), wall_s=round(time.time() - t0, 1),
                   clean_acc_2000=acc, se=se)
        if cfg.sd == 0 and ds == 'cifar10':
            s5 = te.subset(500, seed=1); x5, y5 = to_model_range(s5.x), s5.y
            xa = torch.cat([PGD(m, eps=0.06, step=0.006, steps=20, eot=1)(x5[i:i + 100], y5[i:i + 100]) for i in range(0, 500, 100)])
            rec['pgd20_acc_500'] = mean_se(expected_correct(m, xa, y5, n_draws=1))
        record(args.out, rec)


def make(m, spec:str):
    kind, *a = spec.split(',')
    eot = lambda i: int(a[i]) if len(a) > i else 1
    prec = lambda i: a[i] if len(a) > i else 'fp32'
    if kind == 'cw': return CarliniWagnerL2(m, binary_search_steps=int(a[0]), steps=int(a[1]), initial_const=float(a[2]), eot=eot(3), precision=prec(4)), eot(3)
    if kind == 'ead': return EAD(m, binary_search_steps=int(a[0]), steps=int(a[1]), initial_const=float(a[2]), eot=eot(3), precision=prec(4)), eot(3)
    if kind == 'pgd': return PGD(m, eps=0.06, step=0.006, steps=int(a[0]), eot=eot(1), precision=prec(2)), eot(1)
    if kind == 'apgd': return APGD(m, eps=0.06, steps=int(a[0]), eot=eot(1), loss=a[2], precision=prec(3)), eot(1)
    raise SystemExit(f"unknown attack spec {spec!r}; valid kinds: cw, ead, pgd, apgd")


def attack(args):
    tr, te = load_dataset('cifar10', 'train', args.data_dir), load_dataset('cifar10', 'test', args.data_dir)
    kw = dict(num_classes=10, seed=args.seed)
    if args.model != 'none': d, sd = args.model.split(':'); kw.update(dist=d, sd=float(sd))
    m = get_model(fast_config(**kw), tr, te).model.eval()
    s = te.subset(200, seed=0); x, y = to_model_range(s.x), s.y
    for spec in args.specs:
        atk, eot = make(m, spec)
        t0 = time.time(); xa = torch.cat([atk(x[i:i + 100], y[i:i + 100]) for i in range(0, 200, 100)]); dt = time.time() - t0
        acc, se = mean_se(expected_correct(m, xa, y, n_draws=1 if eot == 1 else 50))
        record(args.out, dict(model=args.model, attack=spec, n=200, acc=round(acc, 4), se=round(se, 4), time_s=round(dt, 1)))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default=str(CACHE/'cifar10-jpeg')); ap.add_argument('--cifar100-dir', default=str(CACHE/'cifar100'))
    ap.add_argument('--seed', type=int, default=0); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--out', type=Path, default=Path('quick_calibration.jsonl'))
    sub = ap.add_subparsers(dest='cmd', required=True)
    sub.add_parser('train').add_argument('--only', default='', help=f"comma-separated candidates (default all): {', '.join(CANDIDATES)}")
    p = sub.add_parser('attack'); p.add_argument('model'); p.add_argument('specs', nargs='+')
    args = ap.parse_args(); torch.set_num_threads(args.threads)
    train(args) if args.cmd == 'train' else attack(args)
