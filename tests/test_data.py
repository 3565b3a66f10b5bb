"""Image decoding (formats, modes, EXIF, bad files, bombs), layouts, splits and manifests."""

import csv
import io

import numpy as np
import pytest
from PIL import Image

from dfdetect.data.datasets import (
    DataLayoutError,
    ImageDataset,
    collate,
    limit_per_class,
    manifest_hash,
    read_manifest,
    resolve_items,
    scan,
    select_items,
    stratified_split,
    write_manifest,
)
from dfdetect.data.io import ImageLoadError, open_image, read_image
from dfdetect.data.preprocess import preprocess


@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tif")]
)
def test_formats_decode_to_rgb(tmp_path, fmt, ext):
    arr = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    p = tmp_path / f"x.{ext}"
    Image.fromarray(arr).save(p, format=fmt)
    img = open_image(p)
    assert img.mode == "RGB" and img.size == (30, 20)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_modes_convert_to_rgb(tmp_path, mode):
    if mode == "I;16":
        img = Image.fromarray(np.full((10, 12), 65535, dtype=np.uint16))
        fmt = "PNG"
    else:
        img = Image.new("RGB", (12, 10), (200, 50, 10)).convert(mode)
        fmt = "TIFF" if mode == "CMYK" else "PNG"
    p = tmp_path / f"x.{fmt.lower()}"
    img.save(p, format=fmt)
    out = open_image(p)
    assert out.mode == "RGB" and out.size == (12, 10)
    if mode == "I;16":
        assert np.asarray(out).min() == 255  # full-scale 16-bit maps to white, not to a clipped 255/65535


def test_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    p = tmp_path / "t.png"
    img.save(p)
    assert np.asarray(open_image(p)).min() == 255


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "o.jpg"
    img.save(p, exif=exif)
    assert open_image(p).size == (20, 40)


def test_read_image_returns_the_jpeg_tables_of_the_same_parse(tmp_path):
    """The scan's quality estimate reads the tables from the one decode; a rotated JPEG keeps them too."""
    from dfdetect.faces.predict import jpeg_quality

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "q55.jpg", quality=55, exif=exif)
    img.convert("L").save(tmp_path / "grey.jpg", quality=70)
    img.save(tmp_path / "x.png")
    rotated, tables = read_image((tmp_path / "q55.jpg").read_bytes())
    assert rotated.size == (24, 40) and rotated.mode == "RGB" and jpeg_quality(tables) == 55
    grey, tables = read_image(tmp_path / "grey.jpg")
    assert grey.mode == "RGB" and jpeg_quality(tables) == 70
    assert read_image(tmp_path / "x.png")[1] is None
    # The upright image is returned without a copy: it must not depend on the file after the call.
    upright = open_image(tmp_path / "x.png")
    (tmp_path / "x.png").write_bytes(b"gone")
    assert np.array_equal(np.asarray(upright), np.asarray(img))


def test_bad_files_raise_one_clear_error(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[:100])
    for name, why in [
        ("empty.jpg", "empty"),
        ("text.png", "not an image"),
        ("trunc.jpg", "corrupt"),
        ("nope.jpg", "no such"),
    ]:
        with pytest.raises(ImageLoadError, match=why):
            open_image(tmp_path / name)


def test_any_decoder_exception_is_an_image_load_error(tmp_path, monkeypatch):
    """Pillow plugins can meet malformed bytes with exceptions outside OSError/ValueError (struct.error,
    IndexError): those too are one ImageLoadError naming the file, not a crash of a scan or a training run."""
    import struct

    p = tmp_path / "odd.png"
    Image.new("RGB", (8, 8)).save(p)

    def broken_load(self):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(Image.Image, "load", broken_load)
    with pytest.raises(ImageLoadError, match="odd.png: corrupt image .error: unpack"):
        open_image(p)


@pytest.mark.parametrize("side", [10_000, 14_000])
def test_decompression_bomb_refused(tmp_path, side):
    """Past Pillow's limit (100 Mpx: its warning) and past twice it (196 Mpx: its error, raised before the size
    can be read), the message states one limit, ours."""
    p = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(p)  # a few KB on disk
    assert p.stat().st_size < 400_000
    with pytest.raises(ImageLoadError, match=f"bomb.png: .*{side * side:,}.* exceeds the 89,478,485-pixel limit") as e:
        open_image(p)
    assert "178956970" not in str(e.value) and "decompression bomb" in str(e.value)


def test_preprocess_resizes_and_normalises():
    cfg = {"input_size": [3, 32, 32], "resize": 32, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3}
    x = preprocess(Image.new("RGB", (64, 48), (255, 255, 255)), cfg)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x, 1.0, atol=1e-3)


def test_preprocess_normalises_like_torchvision_per_channel():
    """Inference (numpy) and training (torchvision v2) normalisation agree channel by channel, in CHW order."""
    import torch
    from torchvision.transforms import v2 as T

    cfg = {
        "input_size": [3, 24, 24],
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    arr = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    x = preprocess(Image.fromarray(arr), cfg)
    ref = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(cfg["mean"], cfg["std"])])
    assert x.flags["C_CONTIGUOUS"] and x.dtype == np.float32
    assert np.abs(x - ref(Image.fromarray(arr)).numpy()).max() < 1e-5


def test_folder_split_is_stratified_seeded_and_disjoint(tiny_data):
    items, has_splits = scan(tiny_data)
    assert not has_splits and {it.label for it in items} == {0, 1}
    a = stratified_split(items, 0.25, 0.25, seed=1)
    b = stratified_split(items, 0.25, 0.25, seed=1)
    c = stratified_split(items, 0.25, 0.25, seed=2)
    assert a == b and a != c
    per_split = {s: {it.path for it in a if it.split == s} for s in ("train", "valid", "test")}
    assert not (per_split["train"] & per_split["test"]) and not (per_split["train"] & per_split["valid"])
    for s in ("valid", "test"):
        labels = [it.label for it in a if it.split == s]
        assert labels.count(0) >= 3 and labels.count(1) >= 3


def test_manifest_round_trip_and_hash(tiny_data, tmp_path):
    items = stratified_split(scan(tiny_data)[0], 0.25, 0.25, seed=0)
    h = write_manifest(items, tmp_path / "split.csv", tiny_data)
    assert read_manifest(tmp_path / "split.csv") == items
    assert manifest_hash(tmp_path / "split.csv") == h
    assert resolve_items(tiny_data, tmp_path / "split.csv", 0, 0, 0) == items


def test_140k_layout_with_csv_uses_label_str(tmp_path):
    base = tmp_path / "real_vs_fake" / "real-vs-fake"
    rows = []
    for split in ("train", "valid", "test"):
        for cls in ("real", "fake"):
            d = base / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8)).save(d / f"{i}.jpg")
                rows.append((split, cls, f"{split}/{cls}/{i}.jpg"))
    for split in ("train", "valid", "test"):
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", "original_path", "id", "label", "label_str", "path"])
            for k, (_s, cls, rel) in enumerate(r for r in rows if r[0] == split):
                # The collection's own `label` column says real = 1; we must not trust it.
                w.writerow([k, "x", k, 1 if cls == "real" else 0, cls, rel])
    items, has_splits = scan(tmp_path)
    assert has_splits and len(items) == 12
    for it in items:
        assert it.label == (1 if "/fake/" in it.path else 0)
        assert it.split in it.path
        assert (tmp_path / it.path).is_file()


def test_140k_layout_without_csv(tmp_path):
    for split in ("train", "valid", "test"):
        for cls in ("real", "fake"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "a.png")
    items, has_splits = scan(tmp_path)
    assert has_splits and sorted({(it.split, it.label) for it in items}) == sorted(
        (s, lbl) for s in ("train", "valid", "test") for lbl in (0, 1)
    )


def test_unknown_layout_is_explained(tmp_path):
    with pytest.raises(DataLayoutError, match="expected ROOT/real and ROOT/fake"):
        scan(tmp_path)


def test_dataset_skips_bad_files_in_collate(tiny_data):
    import torch

    items, _ = scan(tiny_data)
    ds = ImageDataset(items, tiny_data, transform=lambda im: torch.zeros(1))
    images, labels, index, bad = collate([ds[i] for i in range(len(ds))])
    assert sorted(ds.path(i).name for i in bad) == ["corrupt.jpg", "empty.jpg", "notes.png"]
    assert len(images) == len(labels) == len(index) == len(ds) - 3


def test_limit_per_class():
    from dfdetect.data.datasets import Item

    items = [Item(f"{i}", i % 2, "train") for i in range(10)]
    assert len(limit_per_class(items, 2)) == 4


def _multi_folder_model(tiny_data, tmp_path):
    """A model folder whose split.csv names tiny_data as one source folder of a data root (like the shipped one)."""
    items = stratified_split(scan(tiny_data)[0], 0.25, 0.25, seed=0)
    rows = [type(it)(f"{tiny_data.name}/{it.path}", it.label, it.split, tiny_data.name) for it in items]
    (tmp_path / "model").mkdir()
    write_manifest(rows, tmp_path / "model" / "split.csv", tiny_data.parent)
    return tmp_path / "model" / "best.pt", items


def test_scoring_a_source_folder_of_the_models_manifest_takes_its_split(tiny_data, tmp_path):
    model, items = _multi_folder_model(tiny_data, tmp_path)
    got, why = select_items(tiny_data, "test", None, model)
    assert sorted(it.path for it in got) == sorted(it.path for it in items if it.split == "test")
    assert "model's manifest" in why
    got, _ = select_items(tiny_data.parent, "valid", None, model)  # the manifest's own root: every source
    assert len(got) == sum(it.split == "valid" for it in items)


def test_a_copied_subset_of_training_images_is_scored_with_a_warning(tiny_data, tmp_path):
    model, items = _multi_folder_model(tiny_data, tmp_path)
    train = [it for it in items if it.split == "train" and it.label == 0][:2]
    train += [it for it in items if it.split == "train" and it.label == 1][:3]
    copy = tmp_path / "copy"
    for it in train:
        (copy / it.path).parent.mkdir(parents=True, exist_ok=True)
        (copy / it.path).write_bytes((tiny_data / it.path).read_bytes())
    got, why = select_items(copy, "test", None, model)
    assert len(got) == 5 and why.startswith("all images; 5 of the 5 images share label and file name")
    assert select_items(copy, "test", None, None)[1] == "all images"  # no manifest: nothing to compare with


def test_a_run_trained_on_a_manifest_is_scored_on_its_split_without_real_fake_folders(tiny_data, tmp_path):
    items = stratified_split(scan(tiny_data)[0], 0.25, 0.25, seed=0)
    rows = [type(it)(f"{tiny_data.name}/{it.path}", it.label, it.split, tiny_data.name) for it in items]
    (tmp_path / "run").mkdir()
    write_manifest(rows, tmp_path / "run" / "split.csv", tiny_data.parent)  # as train writes it
    got, why = select_items(tiny_data.parent, "test", None, tmp_path / "run" / "best.pt")
    assert len(got) == sum(it.split == "test" for it in items) and "model's manifest" in why
