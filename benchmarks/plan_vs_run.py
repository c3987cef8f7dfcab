"""The plan's ETA per notebook against the measured wall time of a finished run (issue 9: within +-30 %).

    .venv/bin/python benchmarks/plan_vs_run.py --data-dir D --cifar100-dir D2 [--since 2026-12-05] [--json PATH]

Plans `--preset` (default quick) here, as `make plan` does, against the model cache the run started from (`--cache-dir`
with its trained networks; default: an empty cache, for a run that trained everything); then
reads `paper_figures/runs/<preset>/status.json` and, for every notebook that finished `ok` on or after `--since`, prints
the planned hours, the measured hours and their ratio. Run it on an idle machine: the calibration is a measurement.
A notebook whose networks were trained by a notebook of an earlier run is not comparable (the plan counts its training
under the first notebook in run order): pass `--since` to keep only the notebooks of one run.
"""
from __future__ import annotations
import json, sys, tempfile
from pathlib import Path

import _common as C
from randsmooth_nb.plan import plan

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = C.parser(__doc__.split('\n')[0])
    ap.add_argument('--preset', default='quick')
    ap.add_argument('--data-dir', default='')
    ap.add_argument('--cifar100-dir', default='')
    ap.add_argument('--since', default='', help='ISO date/time: only notebooks that finished at or after it')
    ap.add_argument('--budget', type=float, default=24.0, help="seconds for the plan's calibration, as --plan-budget")
    ap.add_argument('--cache-dir', default='', help="the run's cache as it started (its models count as cached; default: an empty cache)")
    ap.add_argument('--status', default='', help='status.json to compare with (default paper_figures/runs/<preset>/status.json)')
    args = ap.parse_args()
    machine = C.setup(args)
    status = json.loads(Path(args.status or ROOT/'paper_figures'/'runs'/args.preset/'status.json').read_text())
    with tempfile.TemporaryDirectory() as cold:          # the model cache as the run found it (default: cold)
        p = plan(args.preset, data_dir=args.data_dir, cifar100_dir=args.cifar100_dir, cache_dir=args.cache_dir or cold, budget_s=args.budget)
    rows, tot_p, tot_m = [], 0.0, 0.0
    for r in p.rows:
        s = status.get(r['notebook'], {})
        if s.get('status') != 'ok' or not s.get('seconds') or s.get('finished', '') < args.since or r['hours'] is None: continue
        mh = s['seconds'] / 3600; tot_p += r['hours']; tot_m += mh
        rows.append({'notebook': r['notebook'], 'plan h': round(r['hours'], 3), 'measured h': round(mh, 3),
                     'plan / measured': round(r['hours'] / mh, 2), 'finished': s['finished']})
    if not rows: sys.exit("no finished notebook to compare with (check --since and the status file)")
    rows.append({'notebook': 'total', 'plan h': round(tot_p, 3), 'measured h': round(tot_m, 3),
                 'plan / measured': round(tot_p / tot_m, 2), 'finished': ''})
    print(C.table(rows, list(rows[0]), f"Plan ({args.preset}, calibrated here in {p.calibration.get('budget_s')} s budget) "
                                       f"against the measured run"))
    worst = max(abs(r['plan / measured'] - 1) for r in rows)
    print(f"RATIO plan / measured, total {tot_p / tot_m:.2f}; worst notebook off by {100 * worst:.0f} % (goal: within 30 %)")
    for k, v in p.calibration['specs'].items(): print(f"  calibration {k}: {v}")
    C.write_json(args.json, {'machine': machine, 'rows': rows, 'calibration': p.calibration})


if __name__ == '__main__':
    main()
