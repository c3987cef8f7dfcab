"""Tests of randsmooth_nb.data: synthetic determinism and learnability, the ImageFolder path (on PNG folders written
to tmp dirs, never the shared data), its cache, error messages, augmentation (brute-force shift search), exact resume
of Batches, stratified subsets and the [-1, 1] scaling."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import randsmooth_nb.data as D
from randsmooth_nb.data import (Batches, ImageData, augment, dataset_cache_dir, figure_samples, from_model_range,
                                is_imagefolder, load_dataset, make_synthetic, to_model_range)

SET = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    "Every test gets its own empty cache root, so nothing depends on (or writes to) ~/.cache."
    monkeypatch.setenv('RANDSMOOTH_CACHE', str(tmp_path / 'cache'))


def write_folder(root, classes=('cat', 'dog'), counts=(3, 2), splits=('train', 'test'), size=(8, 8), seed=0, ext='png'):
    "Write random images as root/<split>/<class>/<i>.<ext>; return {split: [(label, HxWx3 array), ...]}."
    rng, out = np.random.default_rng(seed), {}
    for s in splits:
        out[s] = []
        for ci, (c, k) in enumerate(zip(classes, counts)):
            (Path(root) / s / c).mkdir(parents=True, exist_ok=True)
            for i in range(k):
                a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(a).save(Path(root) / s / c / f'{i:04d}.{ext}'); out[s].append((ci, a))
    return out


# ---------------------------------------------------------------- synthetic

@SET
@given(seed=st.integers(0, 10**6), n=st.integers(1, 60), k=st.integers(2, 6), size=st.integers(4, 12), ch=st.integers(1, 3))
def test_synthetic_deterministic(seed, n, k, size, ch):
    a = load_dataset('synthetic', 'train', n=n, num_classes=k, image_size=size, channels=ch, seed=seed)
    b = make_synthetic('train', n=n, num_classes=k, image_size=size, channels=ch, seed=seed)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.fingerprint == b.fingerprint
    assert a.x.shape == (n, ch, size, size) and a.x.dtype == torch.uint8 and a.y.dtype == torch.int64
    assert a.num_classes == k and a.name == a.label == 'synthetic'
    counts = torch.bincount(a.y, minlength=k)
    assert counts.max() - counts.min() <= 1                                # balanced
    t = make_synthetic('test', n=n, num_classes=k, image_size=size, channels=ch, seed=seed)
    assert not torch.equal(t.x, a.x)
    assert not torch.equal(make_synthetic('train', n=n, num_classes=k, image_size=size, channels=ch, seed=seed + 1).x, a.x)


def test_synthetic_same_distribution_across_splits():
    a, t = make_synthetic('train', n=2000), make_synthetic('test', n=2000)
    ma = torch.stack([a.x[a.y == c].float().mean(0) for c in range(10)])
    mt = torch.stack([t.x[t.y == c].float().mean(0) for c in range(10)])
    between = (ma[:, None] - ma[None]).abs().mean(dim=(2, 3, 4))           # distance between class means
    assert (ma - mt).abs().mean() < 0.2 * between[~torch.eye(10, dtype=bool)].mean()
    assert abs(a.x.float().std() - t.x.float().std()) < 1.0


def test_synthetic_prototypes_are_flip_symmetric():
    "The class signal is left-right symmetric, so flip augmentation keeps the class (class means ~ symmetric)."
    a = make_synthetic('train', n=4000, noise=0.0, clutter=0.0)
    m = torch.stack([a.x[a.y == c].float().mean(0) for c in range(10)])
    assert (m - m.flip(-1)).abs().max() < 3.0                               # only the brightness offset's sampling error


def test_tiny_model_learns_synthetic():
    from randsmooth_nb.models import build_model
    torch.manual_seed(0)
    tr, te = make_synthetic('train', n=1500), make_synthetic('test', n=500)
    model = build_model('tiny')
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    t0 = time.perf_counter()
    for ep in range(2):
        model.train()
        for xb, yb in Batches(tr, 64, device='cpu').epoch(ep):
            opt.zero_grad(); F.cross_entropy(model(xb), yb).backward(); opt.step()
    model.eval()
    with torch.no_grad(): acc = (model(to_model_range(te.x)).argmax(1) == te.y).float().mean().item()
    assert acc > 0.4, acc                                                    # chance is 0.1
    assert time.perf_counter() - t0 < 60


def test_synthetic_limit_and_kwargs_only_for_synthetic():
    d = load_dataset('synthetic', 'test', limit=100, n=1000)
    assert len(d) == 100 and torch.bincount(d.y).tolist() == [10] * 10
    with pytest.raises(ValueError, match="only accepted for 'synthetic'"): load_dataset('cifar10', n=5)


# ---------------------------------------------------------------- ImageFolder

def test_imagefolder_pixels_labels_and_cache(tmp_path, monkeypatch):
    root = tmp_path / 'pets'
    written = write_folder(root, counts=(3, 2))
    d = load_dataset('imagefolder', 'train', data_dir=root)
    assert d.classes == ['cat', 'dog'] and d.name == 'imagefolder' and d.label == 'ImageFolder: pets'
    assert d.y.tolist() == [l for l, _ in written['train']]
    assert np.array_equal(d.x.permute(0, 2, 3, 1).numpy(), np.stack([a for _, a in written['train']]))
    t = load_dataset('imagefolder', 'test', data_dir=root)
    assert np.array_equal(t.x.permute(0, 2, 3, 1).numpy(), np.stack([a for _, a in written['test']]))
    cached = list(dataset_cache_dir().glob('*.pt'))
    assert len(cached) == 2 and dataset_cache_dir() == tmp_path / 'cache' / 'datasets'
    # a second load comes from the cache: decoding is not called
    monkeypatch.setattr(D, '_decode', lambda *a, **k: (_ for _ in ()).throw(AssertionError('decoded again')))
    assert load_dataset('imagefolder', 'train', data_dir=root).fingerprint == d.fingerprint
    # touching the folder's content invalidates the cache
    monkeypatch.undo(); monkeypatch.setenv('RANDSMOOTH_CACHE', str(tmp_path / 'cache'))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'train' / 'dog' / '9999.png')
    d2 = load_dataset('imagefolder', 'train', data_dir=root)
    assert len(d2) == 6 and d2.fingerprint != d.fingerprint
    assert load_dataset('imagefolder', 'train', data_dir=root, cache=False).fingerprint == d2.fingerprint


def test_cache_is_atomic_and_readable_by_torch_load(tmp_path):
    root = tmp_path / 'f'; write_folder(root)
    load_dataset('imagefolder', 'train', data_dir=root)
    files = list(dataset_cache_dir().iterdir())
    assert len(files) == 1 and not files[0].name.endswith('.tmp')
    c = torch.load(files[0], weights_only=True)
    assert c['x'].dtype == torch.uint8 and c['classes'] == ['cat', 'dog']


def test_imagefolder_jpeg_val_alias_resize_limit(tmp_path):
    root = tmp_path / 'imnet'
    write_folder(root, classes=('a', 'b', 'c'), counts=(4, 2, 2), splits=('train', 'val'), size=(20, 30), ext='jpg')
    assert is_imagefolder(root)
    v = load_dataset('imagefolder', 'test', data_dir=root, image_size=12)   # 'test' falls back to val/
    assert v.x.shape == (8, 3, 12, 12) and load_dataset('imagefolder', 'val', data_dir=root, image_size=12).fingerprint == v.fingerprint
    lim = load_dataset('imagefolder', 'train', data_dir=root, limit=4, image_size=10)
    assert torch.bincount(lim.y, minlength=3).tolist() == [2, 1, 1]        # proportional to 4:2:2
    # without image_size, mixed sizes are an error that names the fix
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / 'train' / 'a' / 'zz.png')
    with pytest.raises(ValueError, match='image_size'): load_dataset('imagefolder', 'train', data_dir=root)


def test_resize_center_crop_exact_on_structured_image(tmp_path):
    "A 20x40 image whose middle 20x20 is white and the rest black: resize to 10 and crop keeps exactly the white square."
    a = np.zeros((20, 40, 3), np.uint8); a[:, 10:30] = 255
    root = tmp_path / 'r'
    for s in ('train', 'test'):
        (root / s / 'x').mkdir(parents=True); Image.fromarray(a).save(root / s / 'x' / '0.png')
    d = load_dataset('imagefolder', 'train', data_dir=root, image_size=10)
    assert d.x.shape == (1, 3, 10, 10)
    assert d.x[0, :, :, 1:-1].min() == 255                                  # interior columns are white


def test_cifar_from_imagefolder_copy_labels(tmp_path):
    classes = [f'c{i}' for i in range(10)]
    jpeg = tmp_path / 'cifar10-jpeg'
    write_folder(jpeg, classes=classes, counts=[1] * 10, size=(4, 4), ext='jpg')
    d = load_dataset('cifar10', 'test', data_dir=jpeg)
    assert d.name == 'cifar10' and d.label == 'CIFAR-10 (JPEG copy)' and len(d) == 10
    other = tmp_path / 'mycopy'
    write_folder(other, classes=classes, counts=[1] * 10, size=(4, 4))
    assert load_dataset('cifar10', data_dir=other).label == 'CIFAR-10 (ImageFolder: mycopy)'
    with pytest.raises(ValueError, match='CIFAR-100 has 100'): load_dataset('cifar100', data_dir=other)
    # with no data_dir, a copy under the cache root is found
    write_folder(tmp_path / 'cache' / 'cifar10-jpeg', classes=classes, counts=[1] * 10, size=(4, 4), ext='jpg')
    assert load_dataset('cifar10').label == 'CIFAR-10 (JPEG copy)'


def test_missing_data_messages(tmp_path):
    missing = tmp_path / 'nope'
    with pytest.raises(FileNotFoundError) as e: load_dataset('cifar10', data_dir=missing)
    msg = str(e.value)
    assert f'CIFAR-10 not found in {missing}' in msg and 'download=True' in msg and 'needs internet' in msg
    assert 'DIR/train/<class>/*.png|jpg and DIR/test/<class>/*' in msg
    with pytest.raises(FileNotFoundError, match='CIFAR-100 not found in any of'): load_dataset('cifar100')
    with pytest.raises(FileNotFoundError, match='ImageFolder layout'): load_dataset('imagefolder', data_dir=missing)
    empty = tmp_path / 'empty'; (empty / 'train' / 'a').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no 'test' split"): load_dataset('imagefolder', 'test', data_dir=empty)
    with pytest.raises(FileNotFoundError, match='no image files'): load_dataset('imagefolder', 'train', data_dir=empty)
    with pytest.raises(ValueError, match='needs data_dir'): load_dataset('imagefolder')


def test_unknown_name_split_and_bad_args():
    with pytest.raises(ValueError, match='cifar10, cifar100, imagefolder, synthetic'): load_dataset('mnist')
    with pytest.raises(ValueError, match='train, test, val'): load_dataset('synthetic', 'training')
    with pytest.raises(ValueError, match='limit'): load_dataset('synthetic', limit=0)
    with pytest.raises(ValueError, match='image_size'): load_dataset('synthetic', image_size=-3)


# ---------------------------------------------------------------- ImageData

@SET
@given(counts=st.lists(st.integers(1, 40), min_size=2, max_size=6), frac=st.floats(0.01, 1.0), seed=st.integers(0, 10**6))
def test_subset_stratified(counts, frac, seed):
    y = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    x = torch.arange(len(y) * 3, dtype=torch.int64).reshape(-1, 3, 1, 1) % 256    # rows identify images (with y)
    d = ImageData(x.to(torch.uint8), y, [str(i) for i in range(len(counts))], 'toy')
    n = max(1, round(frac * len(y)))
    s = d.subset(n, seed=seed)
    assert len(s) == n and torch.equal(s.x, d.subset(n, seed=seed).x)
    got = torch.bincount(s.y, minlength=len(counts)).double()
    exact = torch.tensor(counts).double() * n / len(y)
    assert ((got - exact).abs() < 1).all()                                    # floor or ceil of the exact share
    # every kept (image, label) pair is one of the originals
    orig = {(tuple(a.flatten().tolist()), int(b)) for a, b in zip(d.x, d.y)}
    assert all((tuple(a.flatten().tolist()), int(b)) in orig for a, b in zip(s.x, s.y))
    u = d.subset(n, seed=seed, stratified=False)
    assert len(u) == n


def test_fingerprint_sensitivity_and_to():
    d = make_synthetic('test', n=50)
    x2 = d.x.clone(); x2[7, 1, 3, 3] ^= 1
    assert ImageData(x2, d.y, d.classes, 'synthetic').fingerprint != d.fingerprint
    y2 = d.y.clone(); y2[0] = (y2[0] + 1) % 10
    assert ImageData(d.x, y2, d.classes, 'synthetic').fingerprint != d.fingerprint
    assert ImageData(d.x.clone(), d.y.clone(), d.classes, 'other').fingerprint == d.fingerprint    # content only
    e = d.to('cpu')
    assert e.fingerprint == d.fingerprint and e.device.type == 'cpu' and len(e) == 50


# ---------------------------------------------------------------- scaling

@SET
@given(st.lists(st.integers(0, 255), min_size=1, max_size=300))
def test_model_range(vals):
    v = torch.tensor(vals, dtype=torch.uint8)
    x = to_model_range(v)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(x.numpy(), np.array(vals) / 127.5 - 1, atol=1e-6)   # independent formula
    assert torch.equal(from_model_range(x), v)
    assert torch.allclose(from_model_range(x, torch.float64), v.double(), atol=1e-4)
    assert torch.equal(to_model_range(v.float()), x)


# ---------------------------------------------------------------- augmentation

@SET
@given(n=st.integers(1, 6), c=st.integers(1, 3), h=st.integers(3, 9), w=st.integers(3, 9), pad=st.integers(0, 4),
       seed=st.integers(0, 10**6), flip=st.booleans())
def test_augment_is_a_shift_of_the_padded_image(n, c, h, w, pad, seed, flip):
    x = torch.randint(1, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    out = augment(x, torch.Generator().manual_seed(seed), pad=pad, flip=flip)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(seed), pad=pad, flip=flip))
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))          # independent padding (numpy)
    for i in range(n):
        o = out[i].numpy()
        cands = [xp[i, :, a:a + h, b:b + w] for a in range(2 * pad + 1) for b in range(2 * pad + 1)]
        ok = any(np.array_equal(o, cd) for cd in cands) or (flip and any(np.array_equal(o, cd[:, :, ::-1]) for cd in cands))
        assert ok
    f = augment(to_model_range(x), torch.Generator().manual_seed(seed), pad=pad, flip=flip, fill=-1.0)
    assert torch.equal(from_model_range(f), out) and f.min() >= -1 and f.max() <= 1


def test_augment_covers_all_offsets_and_flips():
    "With pad=1, all 9 offsets x 2 flips occur, roughly uniformly."
    x = torch.randint(1, 256, (4000, 1, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = augment(x, torch.Generator().manual_seed(1), pad=1)
    xp = F.pad(x, (1, 1, 1, 1))
    seen = torch.zeros(3, 3, 2)
    for a in range(3):
        for b in range(3):
            cd = xp[:, :, a:a + 5, b:b + 5]
            seen[a, b, 0] = (out == cd).flatten(1).all(1).sum()
            seen[a, b, 1] = (out == cd.flip(-1)).flatten(1).all(1).sum()
    assert seen.sum() == 4000
    assert seen.min() > 4000 / 18 * 0.7 and seen.max() < 4000 / 18 * 1.3


def test_augment_identity_and_errors():
    x = torch.randint(0, 256, (3, 3, 6, 6), dtype=torch.uint8)
    assert torch.equal(augment(x, torch.Generator(), pad=0, flip=False), x)
    assert augment(x[:0], torch.Generator()).shape == (0, 3, 6, 6)
    with pytest.raises(ValueError, match='pad'): augment(x, torch.Generator(), pad=-1)
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'): augment(x[0], torch.Generator())


# ---------------------------------------------------------------- batches

@SET
@given(n=st.integers(20, 120), bs=st.integers(1, 32), epoch=st.integers(0, 5), seed=st.integers(0, 10**6), data=st.data())
def test_resume_from_batch_k(n, bs, epoch, seed, data):
    d = make_synthetic('train', n=n, image_size=8)
    bt = Batches(d, min(bs, n), device='cpu', seed=seed, drop_last=data.draw(st.booleans()))
    full = list(bt.epoch(epoch))
    assert len(full) == len(bt)
    k = data.draw(st.integers(0, len(bt)))
    fresh = Batches(d, min(bs, n), device='cpu', seed=seed, drop_last=bt.drop_last)   # a new process after restart
    rest = list(fresh.epoch(epoch, start=k))
    assert len(rest) == len(bt) - k
    for (xa, ya), (xb, yb) in zip(full[k:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_batches_cover_each_image_once_and_differ_by_epoch():
    d = make_synthetic('train', n=103, image_size=8)
    bt = Batches(d, 10, shuffle=True, augment=False, drop_last=False, device='cpu')
    assert len(bt) == 11 and len(Batches(d, 10, device='cpu')) == 10
    xs = torch.cat([x for x, _ in bt.epoch(4)]); ys = torch.cat([y for _, y in bt.epoch(4)])
    key = lambda x, y: sorted(zip(x.flatten(1).tolist(), y.tolist()))
    assert key(from_model_range(xs), ys) == key(d.x, d.y)                     # a permutation of the data set
    assert not torch.equal(bt.permutation(0), bt.permutation(1))
    assert torch.equal(bt.permutation(3), bt.permutation(3))
    xb, _ = next(iter(Batches(d, 10, device='cpu', channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last) and xb.dtype == torch.float32
    with pytest.raises(ValueError, match='start'): list(bt.epoch(0, start=12))
    with pytest.raises(ValueError, match='drop_last'): Batches(d, 200, device='cpu')
    with pytest.raises(ValueError, match='batch_size'): Batches(d, 0, device='cpu')


def test_figure_samples():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig = figure_samples(make_synthetic('test', n=60, num_classes=3), n_per_class=2)
    assert 'synthetic' in fig._suptitle.get_text()
    plt.close(fig)


def test_cifar_torchvision_path_with_stub(tmp_path, monkeypatch):
    "The torchvision branch (no internet here): a stub dataset class stands in for torchvision.datasets.CIFAR10."
    import torchvision
    rng = np.random.default_rng(0)
    arr, targets = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), [i % 10 for i in range(30)]
    calls = []

    class Stub:
        classes = [f'k{i}' for i in range(10)]
        def __init__(self, root, train, download):
            calls.append((root, train, download)); self.data, self.targets = arr, targets

    monkeypatch.setattr(torchvision.datasets, 'CIFAR10', Stub)
    (tmp_path / 'tv' / 'cifar-10-batches-py').mkdir(parents=True)
    d = load_dataset('cifar10', 'test', data_dir=tmp_path / 'tv')
    assert calls[-1] == (str(tmp_path / 'tv'), False, False)
    assert d.label == 'CIFAR-10' and d.classes == Stub.classes and d.y.tolist() == targets
    assert np.array_equal(d.x.permute(0, 2, 3, 1).numpy(), arr)
    lim = load_dataset('cifar10', 'train', data_dir=tmp_path / 'tv', limit=10, image_size=16)
    assert calls[-1][1] is True and lim.x.shape == (10, 3, 16, 16) and sorted(lim.y.tolist()) == list(range(10))
    # download=True on an empty directory is forwarded to torchvision
    load_dataset('cifar10', data_dir=tmp_path / 'empty', download=True)
    assert calls[-1] == (str(tmp_path / 'empty'), True, True)
