"""C&W/EAD's EoT gradient of an objective of the mean logits (`attacks.eot_mean_logits_grad`) when the batch's draws
do not fit in one pass: inputs grouped so that each group's draws fit one pass (what the attacks do, no generator) against
the replay (a no-grad pass forming the mean logits, then the gradient passes drawing the same noise again; what a caller
with a `generator` gets, and what every call did before). Same rows per pass, same network, same inputs.

    .venv/bin/python benchmarks/eot_grouping.py [--quick] [--eot 16] [--batch 100] [--rows 128]
"""
import torch
import torch.nn.functional as F
from _common import parser, setup, interleaved, median, spread, table, write_json
from randsmooth_nb.models import build_model
from randsmooth_nb.noise import NoiseInjection, RandomizedNetwork
from randsmooth_nb.attacks import eot_mean_logits_grad, margin

ap = parser(__doc__.split('\n')[0])
ap.add_argument('--eot', type=int, default=16, help='draws per input (quick preset: 16)')
ap.add_argument('--batch', type=int, default=100, help='inputs per call (quick preset attack batch: 100)')
ap.add_argument('--rows', type=int, default=128, help='rows per forward pass (CPU default: 128)')
a = ap.parse_args(); info = setup(a)
net = RandomizedNetwork(build_model(a.arch), NoiseInjection('gaussian', 0.25)).eval()
for p in net.parameters(): p.requires_grad_(False)
g = torch.Generator().manual_seed(0)
x = torch.rand(a.batch, 3, 32, 32, generator=g) * 2 - 1; y = torch.randint(0, 10, (a.batch,), generator=g)
const = torch.full((a.batch,), 0.1)
obj = lambda z: const * margin(z, y)
fns = {'grouped (no generator; the attacks)': lambda: eot_mean_logits_grad(net, x, a.eot, obj, max_batch=a.rows),
       'replayed (with a generator)': lambda: eot_mean_logits_grad(net, x, a.eot, obj, max_batch=a.rows,
                                                                    generator=torch.Generator().manual_seed(1))}
T = interleaved(fns, warmup=1, reps=3 if a.quick else 7)
rows = [dict(implementation=k, s_per_call=f"{median(v):.3f}", rows_per_s=f"{a.batch * a.eot / median(v):,.0f}", iqr=f"{spread(v):.0%}")
        for k, v in T.items()]
print(f"eot_mean_logits_grad, {a.arch}, B={a.batch}, EoT {a.eot}, {a.rows} rows/pass, {info['threads']} threads")
print(table(rows, ['implementation', 's_per_call', 'rows_per_s', 'iqr']))
r = median(T['grouped (no generator; the attacks)']) / median(T['replayed (with a generator)'])
print(f"RATIO time grouped / replayed: {r:.3f}  (one fewer forward pass per draw: about 0.75 expected)")
if a.json: write_json(a.json, dict(info=info, times=T, ratio_grouped_over_replayed=r))
