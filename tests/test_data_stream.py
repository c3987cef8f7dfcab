"""Tests of the streaming ImageFolder path of randsmooth_nb.data (FolderData, FolderBatches, make_batches,
random_resized_crop): on small PNG/JPEG folders written to tmp dirs. Streamed evaluation batches are compared with
`Batches` over the in-memory copy, streamed crops with an independent float resize of the window, and augmented epochs
across worker counts, batch sizes and resume points."""
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from randsmooth_nb.data import (Batches, FolderBatches, FolderData, ImageData, load_dataset, make_batches,
                                random_resized_crop, random_resized_crop_params, to_model_range)

SET = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
S = 32


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('RANDSMOOTH_CACHE', str(tmp_path / 'cache'))


def write_folder(root, classes=('ant', 'bee', 'cow'), counts=(8, 8, 8), size=(40, 48), splits=('train', 'val'), seed=0):
    "Smooth random RGB PNGs root/<split>/<class>/<i>.png."
    rng = np.random.default_rng(seed)
    for s in splits:
        for c, k in zip(classes, counts):
            (Path(root) / s / c).mkdir(parents=True, exist_ok=True)
            for i in range(k):
                a = np.clip(rng.normal(128, 60, (4, 4, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).resize(size[::-1], Image.BICUBIC).save(Path(root) / s / c / f'{i:02d}.png')
    return Path(root)


@pytest.fixture(scope='module')
def zoo(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp('data') / 'zoo')


@pytest.fixture(scope='module')
def uneven(tmp_path_factory):
    "Unequal classes (5, 9, 3)."
    return write_folder(tmp_path_factory.mktemp('data') / 'uneven', counts=(5, 9, 3), seed=1)


def cat(batches):
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------- random resized crop

@SET
@given(h=st.integers(8, 80), w=st.integers(8, 80), lo=st.floats(0.05, 1), hi=st.floats(0.05, 1),
       r0=st.floats(0.3, 3), r1=st.floats(0.3, 3), seed=st.integers(0, 2**31))
def test_crop_params_in_range(h, w, lo, hi, r0, r1, seed):
    scale, ratio = (min(lo, hi), max(lo, hi)), (min(r0, r1), max(r0, r1))
    t, l, ch, cw = random_resized_crop_params(h, w, random.Random(seed), scale, ratio)
    assert 0 <= t and t + ch <= h and 0 <= l and l + cw <= w and ch >= 1 and cw >= 1
    central = (t, l) == ((h - ch) // 2, (w - cw) // 2)
    if not central:   # a random window: each side is within 1/2 of sqrt(T r), sqrt(T / r) for an area T, a ratio r in range
        assert (cw + .5) * (ch + .5) >= scale[0] * h * w - 1e-9 and (cw - .5) * (ch - .5) <= scale[1] * h * w + 1e-9
        assert (cw - .5) / (ch + .5) <= ratio[1] + 1e-9 and (cw + .5) / (ch - .5) >= ratio[0] - 1e-9


def test_crop_params_distribution():
    "Placement is uniform: over many draws of a fixed-size window every offset occurs, with about equal frequency."
    counts = np.zeros(11, int)
    for s in range(2000):
        t, l, ch, cw = random_resized_crop_params(20, 20, random.Random(s), scale=(0.25, 0.25), ratio=(1, 1))
        assert (ch, cw) == (10, 10)
        counts[t] += 1
    assert counts.min() > 2000 / 11 * 0.6, counts


@SET
@given(seed=st.integers(0, 2**31), h=st.integers(20, 60), w=st.integers(20, 60))
def test_crop_is_resized_window(seed, h, w):
    "The output is the drawn window resized to SxS (checked against torch's float resize), flipped iff drawn."
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed % 1000))
    img = F.avg_pool2d(img[None].float(), 3, 1, 1)[0].round().to(torch.uint8)   # smooth: rounding differences stay small
    out = random_resized_crop(img, 24, random.Random(seed))
    rng = random.Random(seed)
    t, l, ch, cw = random_resized_crop_params(h, w, rng)
    flip = rng.random() < 0.5
    ref = F.interpolate(img[None, :, t:t + ch, l:l + cw].float(), size=(24, 24), mode='bilinear', antialias=True,
                        align_corners=False)[0].round().clamp(0, 255)
    if flip: ref = ref.flip(-1)
    assert out.shape == (3, 24, 24) and out.dtype == torch.uint8
    assert (out.float() - ref).abs().max() <= 2


def test_crop_flip_frequency():
    img = torch.arange(3 * 10 * 12, dtype=torch.uint8).reshape(3, 10, 12)
    whole = F.interpolate(img[None].float(), size=(8, 8), mode='bilinear', antialias=True)[0]
    flips = 0
    for s in range(400):
        o = random_resized_crop(img, 8, random.Random(s), scale=(1, 1), ratio=(1.2, 1.2)).float()
        d0, d1 = (o - whole).abs().max(), (o - whole.flip(-1)).abs().max()
        assert min(d0, d1) <= 1
        flips += bool(d1 < d0)
    assert 150 < flips < 250, flips


# ---------------------------------------------------------------- FolderData

def test_folderdata_basics(zoo):
    fd = load_dataset('imagefolder', 'train', zoo, image_size=S, stream=True)
    mem = load_dataset('imagefolder', 'train', zoo, image_size=S)
    assert isinstance(fd, FolderData) and fd.name == 'imagefolder' and fd.label == mem.label
    assert len(fd) == 24 and fd.num_classes == 3 and fd.classes == ['ant', 'bee', 'cow'] and fd.image_shape == (3, S, S)
    assert torch.equal(fd.y, mem.y) and fd.y.dtype == torch.int64
    assert [f.relative_to(zoo).as_posix() for f in fd.files[:2]] == ['train/ant/00.png', 'train/ant/01.png']
    assert all(f.exists() for f in fd.files)
    assert fd.to('cpu') is fd
    val = load_dataset('imagefolder', 'val', zoo, image_size=S, stream=True)
    assert len(val) == 24 and val.fingerprint != fd.fingerprint
    assert 'FolderData' in repr(fd)


def test_fingerprint_tracks_files(tmp_path):
    root = write_folder(tmp_path / 'f', counts=(3, 3, 3))
    fp = lambda **kw: load_dataset('imagefolder', 'train', root, image_size=S, stream=True, **kw).fingerprint
    a = fp()
    assert fp() == a and fp(limit=6) != a
    assert load_dataset('imagefolder', 'train', root, image_size=16, stream=True).fingerprint != a
    f = root / 'train' / 'bee' / '01.png'
    st_ = f.stat(); os.utime(f, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    b = fp()
    assert b != a                                                   # touched
    (root / 'train' / 'bee' / '01.png').rename(root / 'train' / 'cow' / '99.png')
    assert fp() not in (a, b)                                       # moved to another class


def test_folderdata_constructor_errors(zoo):
    fd = load_dataset('imagefolder', 'train', zoo, image_size=S, stream=True)
    with pytest.raises(ValueError, match='image_size must be a positive integer'): FolderData(fd.files, fd.y, fd.classes, 0)
    with pytest.raises(ValueError, match=r'\[0, 2\)'): FolderData(fd.files, fd.y, ['a', 'b'], S)
    with pytest.raises(ValueError, match='shape'): FolderData(fd.files, fd.y[:3], fd.classes, S)
    with pytest.raises(ValueError, match=r'\[1, 24\]'): fd.subset(25)
    with pytest.raises(ValueError, match='positive integer'): fd.materialize(limit=0)
    # built from plain paths: the same files and fingerprint-independent materialization
    fd2 = FolderData([str(f) for f in fd.files], fd.y, fd.classes, S)
    assert torch.equal(fd2.materialize().x, fd.materialize().x)


@SET
@given(n=st.integers(1, 17), seed=st.integers(0, 10**6), strat=st.booleans())
def test_subset_matches_imagedata(uneven, n, seed, strat):
    fd = load_dataset('imagefolder', 'train', uneven, image_size=S, stream=True)
    mem = load_dataset('imagefolder', 'train', uneven, image_size=S)
    s, m = fd.subset(n, seed=seed, stratified=strat), mem.subset(n, seed=seed, stratified=strat)
    assert isinstance(s, FolderData) and torch.equal(s.y, m.y)
    rank = {f: i for i, f in enumerate(fd.files)}
    idx = [rank[f] for f in s.files]
    assert idx == sorted(idx) and len(set(idx)) == n
    assert torch.equal(mem.x[idx], m.x)                             # the same images, not only the same labels
    if strat:   # each class's count is within 1 of its proportional share
        share = torch.bincount(fd.y, minlength=3).double() * n / len(fd)
        assert ((torch.bincount(s.y, minlength=3) - share).abs() < 1).all()


def test_materialize_equals_in_memory_and_shares_cache(uneven, tmp_path):
    cache = tmp_path / 'cache' / 'datasets'
    mem = load_dataset('imagefolder', 'train', uneven, image_size=S)
    fd = load_dataset('imagefolder', 'train', uneven, image_size=S, stream=True)
    m = fd.materialize()
    assert isinstance(m, ImageData) and torch.equal(m.x, mem.x) and torch.equal(m.y, mem.y) and m.fingerprint == mem.fingerprint
    assert len(list(cache.glob('*.pt'))) == 1                         # found load_dataset's cache entry
    lim = load_dataset('imagefolder', 'train', uneven, image_size=S, limit=7)
    assert torch.equal(fd.materialize(limit=7).x, lim.x) and torch.equal(fd.materialize(limit=7).y, lim.y)
    assert len(list(cache.glob('*.pt'))) == 2
    fl = load_dataset('imagefolder', 'train', uneven, image_size=S, limit=7, stream=True)
    assert torch.equal(fl.y, lim.y) and torch.equal(fl.materialize().x, lim.x)
    assert len(list(cache.glob('*.pt'))) == 2
    assert torch.equal(mem.materialize(limit=7).x, lim.x) and mem.materialize() is mem


def test_mixed_sizes_jpeg_and_gray(tmp_path):
    "Files of different sizes and modes are all served as (3, S, S); evaluation pixels equal the in-memory copy."
    root = tmp_path / 'mixed'
    rng = np.random.default_rng(3)
    for s in ('train', 'val'):
        for c, (size, mode, ext) in {'a': ((30, 50), 'RGB', 'jpg'), 'b': ((64, 33), 'L', 'png'), 'c': ((33, 33), 'RGB', 'png')}.items():
            (root / s / c).mkdir(parents=True)
            for i in range(3):
                a = rng.integers(0, 256, size + ((3,) if mode == 'RGB' else ()), dtype=np.uint8)
                Image.fromarray(a, mode).save(root / s / c / f'{i}.{ext}')
    fd = load_dataset('imagefolder', 'train', root, image_size=S, stream=True)
    mem = load_dataset('imagefolder', 'train', root, image_size=S)
    ev = cat(make_batches(fd, 4, shuffle=False, augment=False, drop_last=False, device='cpu', num_workers=0).epoch(0))
    assert torch.equal(ev[0], to_model_range(mem.x)) and torch.equal(ev[1], mem.y)
    tr = cat(make_batches(fd, 3, device='cpu', num_workers=0).epoch(0))
    assert tr[0].shape == (9, 3, S, S) and tr[0].min() >= -1 and tr[0].max() <= 1


def test_load_dataset_stream_errors(zoo):
    with pytest.raises(ValueError, match='needs image_size'): load_dataset('imagefolder', 'train', zoo, stream=True)
    with pytest.raises(ValueError, match="only available for 'imagefolder'"): load_dataset('synthetic', stream=True)
    with pytest.raises(ValueError, match="only available for 'imagefolder'"): load_dataset('cifar10', data_dir=zoo, image_size=S, stream=True)
    with pytest.raises(ValueError, match='needs data_dir'): load_dataset('imagefolder', image_size=S, stream=True)
    with pytest.raises(FileNotFoundError, match='expected an ImageFolder layout'):
        load_dataset('imagefolder', 'train', zoo / 'nope', image_size=S, stream=True)


# ---------------------------------------------------------------- FolderBatches

@SET
@given(bs=st.integers(1, 10), seed=st.integers(0, 10**6), epoch=st.integers(0, 5), shuffle=st.booleans(), drop=st.booleans())
def test_eval_batches_equal_in_memory_batches(uneven, bs, seed, epoch, shuffle, drop):
    "Without augmentation a streamed epoch is bit-identical to Batches over the decoded copy (same order, same crops)."
    fd = load_dataset('imagefolder', 'train', uneven, image_size=S, stream=True)
    mem = load_dataset('imagefolder', 'train', uneven, image_size=S)
    kw = dict(shuffle=shuffle, augment=False, drop_last=drop, device='cpu', seed=seed)
    fb, bt = make_batches(fd, bs, num_workers=0, **kw), make_batches(mem, bs, num_workers=3, **kw)
    assert isinstance(fb, FolderBatches) and isinstance(bt, Batches) and len(fb) == len(bt)
    a, b = list(fb.epoch(epoch)), list(bt.epoch(epoch))
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == torch.float32 and ya.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@SET
@given(bs=st.integers(1, 9), bs2=st.integers(1, 9), seed=st.integers(0, 10**6), epoch=st.integers(0, 3), data=st.data())
def test_augmented_epochs_reproducible_and_resumable(uneven, bs, bs2, seed, epoch, data):
    fd = load_dataset('imagefolder', 'train', uneven, image_size=S, stream=True)
    tb = make_batches(fd, bs, device='cpu', seed=seed, drop_last=False, num_workers=0)
    full = list(tb.epoch(epoch))
    assert len(full) == len(tb) == -(-17 // bs)
    x, y = cat(full)
    assert x.shape == (17, 3, S, S) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(y, fd.y[tb.permutation(epoch)])
    start = data.draw(st.integers(0, len(tb)))
    rest = list(tb.epoch(epoch, start=start))                      # resume = the tail of the uninterrupted epoch
    assert len(rest) == len(full) - start
    for (xa, ya), (xr, yr) in zip(full[start:], rest): assert torch.equal(xa, xr) and torch.equal(ya, yr)
    # a sample's augmentation depends on (seed, epoch, position), not on how the epoch is cut into batches
    x2, y2 = cat(make_batches(fd, bs2, device='cpu', seed=seed, drop_last=False, num_workers=0).epoch(epoch))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, cat(tb.epoch(epoch + 1))[0]) and not torch.equal(x, cat(tb.epoch(epoch, seed=seed + 1))[0])


def test_workers_give_the_same_batches(zoo):
    fd = load_dataset('imagefolder', 'train', zoo, image_size=S, stream=True)
    ref = list(make_batches(fd, 5, device='cpu', seed=11, num_workers=0).epoch(4))
    w2 = make_batches(fd, 5, device='cpu', seed=11, num_workers=2)
    assert w2.num_workers == 2 and len(w2) == 4
    got = list(w2.epoch(4))
    assert len(got) == len(ref) == 4
    for (xa, ya), (xb, yb) in zip(ref, got): assert torch.equal(xa, xb) and torch.equal(ya, yb)
    it = w2.epoch(4, start=1); xb, yb = next(it); it.close()          # abandoned early: workers shut down, no hang
    assert torch.equal(xb, ref[1][0])
    assert torch.equal(next(iter(w2.epoch(4, start=3)))[0], ref[3][0])


def test_global_rng_untouched(zoo):
    "Creating and running epochs (and resuming) must not consume the global torch RNG, which train checkpoints."
    fd = load_dataset('imagefolder', 'train', zoo, image_size=S, stream=True)
    torch.manual_seed(123); ref = torch.rand(3)
    torch.manual_seed(123)
    tb = make_batches(fd, 4, device='cpu', num_workers=0)
    for e in range(2): list(tb.epoch(e, start=e))
    assert torch.equal(torch.rand(3), ref)


def test_make_batches_options_and_errors(zoo):
    fd = load_dataset('imagefolder', 'train', zoo, image_size=S, stream=True)
    x = next(iter(make_batches(fd, 4, device='cpu', num_workers=0, channels_last=True).epoch(0)))[0]
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert make_batches(fd, 4, device='cpu').num_workers == min(8, os.cpu_count())
    whole = cat(make_batches(fd, 8, device='cpu', num_workers=0, scale=(1, 1), ratio=(1.2, 1.2)).epoch(0))[0]
    assert whole.shape == (24, 3, S, S)
    assert len(make_batches(fd, 5, drop_last=True, device='cpu')) == 4
    assert len(make_batches(fd, 5, drop_last=False, device='cpu')) == 5
    tb = make_batches(fd, 5, device='cpu', num_workers=0)
    for bad, msg in ((dict(batch_size=0), 'positive integer'), (dict(batch_size=25), 'exceeds the 24 images'),
                     (dict(num_workers=-1), 'num_workers'), (dict(scale=(0.5, 0.2)), '0 < lo <= hi'),
                     (dict(ratio=(0, 1)), '0 < lo <= hi')):
        kw = dict(batch_size=5, device='cpu') | bad
        with pytest.raises(ValueError, match=msg): make_batches(fd, **kw)
    with pytest.raises(ValueError, match='ImageData or a FolderData'): make_batches(torch.zeros(3), 2)
    with pytest.raises(ValueError, match=r'start must be in \[0, 4\]'): next(tb.epoch(0, start=5))
    with pytest.raises(ValueError, match='epoch must be an integer'): next(tb.epoch(-1))
