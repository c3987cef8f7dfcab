"""Shared fixtures: tiny synthetic data (16x16, 10 classes) and two tiny networks trained once per session,
one deterministic (sd=0) and one with Gaussian noise at the input (sd=0.25)."""
import os, tempfile
import pytest
import torch

# Tests never read or write the user's cache (~/.cache/randsmooth may hold real data sets and trained models):
# everything cached during the session goes to a fresh temporary directory.
os.environ['RANDSMOOTH_CACHE'] = tempfile.mkdtemp(prefix='randsmooth-test-cache-')

from randsmooth_nb.data import load_dataset, to_model_range
from randsmooth_nb.training import TrainConfig, train

torch.set_num_threads(1)   # the CI machine has 2 shared cores: one thread per process avoids oversubscription (10x slower)

FAST_LR = (0.05, 0.01, 0.002, 0.0004)   # the paper's schedule shape, scaled for a few hundred steps


def tiny_config(**kw) -> TrainConfig:
    "A 'tiny' configuration that trains in seconds on 16x16 synthetic images."
    base = dict(arch='tiny', epochs=6, batch_size=50, lr_values=FAST_LR, augment=False)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope='session')
def synth():
    "(train, test) synthetic ImageData: 600 / 300 images of 3x16x16, 10 classes."
    return (load_dataset('synthetic', 'train', n=600, image_size=16, seed=0),
            load_dataset('synthetic', 'test', n=300, image_size=16, seed=0))


@pytest.fixture(scope='session')
def eval_xy(synth):
    "The test images in [-1, 1] and their labels."
    te = synth[1]
    return to_model_range(te.x), te.y


def _train(cfg, synth):
    res = train(cfg, synth[0], synth[1], device='cpu', progress=False, channels_last=False)
    for p in res.model.parameters(): p.requires_grad_(False)   # attacks only need input gradients
    return res


@pytest.fixture(scope='session')
def det_run(synth):
    "TrainResult of the undefended (sd=0) tiny network."
    return _train(tiny_config(sd=0.0), synth)


@pytest.fixture(scope='session')
def noisy_run(synth):
    "TrainResult of the tiny network with Gaussian noise of sd 0.25 at the input."
    return _train(tiny_config(sd=0.25), synth)
