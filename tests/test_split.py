"""The multi-folder split: stratified by folder and label, seeded, near-duplicate groups never straddle splits."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dfdetect.cli import app


def _pattern(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A smooth random picture: its perceptual hash is stable under re-encoding, and far from other patterns'."""
    grid = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def _twin(img: Image.Image) -> Image.Image:
    """A near-duplicate: slightly brighter, re-encoded (what the collection's twins look like to a hash)."""
    a = np.asarray(img).astype(np.int16) + 6
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@pytest.fixture()
def three_folders(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Parent with folders a, b, c (real/fake, 20 each); twins planted across a/b and within c."""
    rng = np.random.default_rng(1)
    parent = tmp_path / "data"
    twins: dict[str, str] = {}
    for name in ("a", "b", "c"):
        for cls in ("real", "fake"):
            (parent / name / cls).mkdir(parents=True)
            for i in range(20):
                _pattern(rng).save(parent / name / cls / f"{i:02d}.jpg", quality=95)
    for i in range(4):  # b/fake/0i is a near-copy of a/fake/0i
        src = parent / "a" / "fake" / f"{i:02d}.jpg"
        _twin(Image.open(src).convert("RGB")).save(parent / "b" / "fake" / f"{i:02d}.jpg", quality=80)
        twins[f"a/fake/{i:02d}.jpg"] = f"b/fake/{i:02d}.jpg"
    src = parent / "c" / "real" / "00.jpg"
    _twin(Image.open(src).convert("RGB")).save(parent / "c" / "real" / "01.jpg", quality=80)
    twins["c/real/00.jpg"] = "c/real/01.jpg"
    return parent, twins


def _split(parent: Path, out: Path, *extra: str) -> dict[str, dict[str, str]]:
    args = ["split", "-o", str(out), "--val-fraction", "0.2", "--test-fraction", "0.2", *extra]
    for name in ("a", "b", "c"):
        args += ["--data", str(parent / name)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    with open(out) as f:
        assert f.readline().startswith("# root: ")
        return {r["path"]: r for r in csv.DictReader(f)}


def test_split_keeps_near_duplicates_together_and_stratifies(three_folders, tmp_path):
    parent, twins = three_folders
    rows = _split(parent, tmp_path / "split.csv")
    assert len(rows) == 120
    for a, b in twins.items():
        assert rows[a]["group"] == rows[b]["group"], (a, b)
        assert rows[a]["split"] == rows[b]["split"], (a, b)
    by_group = defaultdict(set)
    for r in rows.values():
        by_group[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in by_group.values()), "a near-duplicate group straddles splits"
    # 20 images per folder and label: 4 test, 4 valid, 12 train each (a group of two may move one image)
    per = Counter((r["source"], r["label"], r["split"]) for r in rows.values())
    for name in ("a", "b", "c"):
        for label in ("0", "1"):
            assert abs(per[(name, label, "test")] - 4) <= 1 and abs(per[(name, label, "valid")] - 4) <= 1
    assert {r["path"].split("/")[0] for r in rows.values()} == {"a", "b", "c"}
    assert all(r["source"] == r["path"].split("/")[0] for r in rows.values())


def test_split_is_seeded(three_folders, tmp_path):
    parent, _ = three_folders
    one = _split(parent, tmp_path / "one.csv")
    two = _split(parent, tmp_path / "two.csv")
    other = _split(parent, tmp_path / "other.csv", "--seed", "7")
    assert one == two
    assert {p: r["split"] for p, r in one.items()} != {p: r["split"] for p, r in other.items()}


def test_kept_manifest_pins_splits_and_train_wins_for_groups(three_folders, tmp_path):
    parent, twins = three_folders
    old = tmp_path / "old.csv"
    # An earlier one-folder manifest of a: its paths are relative to a, as `train` writes them.
    with open(old, "w") as f:
        f.write(f"# root: {parent / 'a'}\npath,label,split\n")
        f.write("fake/00.jpg,1,test\nfake/05.jpg,1,valid\nreal/03.jpg,0,test\n")
    # and pin b's twin of a/fake/00 to train in a multi-folder manifest: the group must follow train
    rows = _split(parent, tmp_path / "new.csv", "--keep", str(old))
    assert rows["a/fake/05.jpg"]["split"] == "valid"
    assert rows["a/real/03.jpg"]["split"] == "test"
    assert rows["a/fake/00.jpg"]["split"] == rows[twins["a/fake/00.jpg"]]["split"] == "test"
    multi = tmp_path / "multi.csv"
    with open(multi, "w") as f:
        f.write(f"# root: {parent}\npath,label,split\na/fake/00.jpg,1,test\nb/fake/00.jpg,1,train\n")
    rows = _split(parent, tmp_path / "new2.csv", "--keep", str(multi))
    assert rows["a/fake/00.jpg"]["split"] == rows["b/fake/00.jpg"]["split"] == "train"


def test_split_refuses_folders_with_the_same_name(tmp_path):
    for d in ("x/faces", "y/faces"):
        for cls in ("real", "fake"):
            (tmp_path / d / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / d / cls / "1.png")
    res = CliRunner().invoke(app, ["split", "-d", str(tmp_path / "x/faces"), "-d", str(tmp_path / "y/faces")])
    assert res.exit_code == 2
    assert "distinct names" in res.output


def test_evaluate_reports_each_folder_and_named_parts(tmp_path):
    from dfdetect.engine.evaluate import format_report, write_eval_artifacts

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 30)
    # folder "good" separates perfectly, folder "bad" is noise: the two must not blur into one number
    sources = np.array(["good"] * 30 + ["bad"] * 30)
    s = np.where(sources == "good", y * 0.8 + 0.1, rng.uniform(0, 1, 60))
    m = write_eval_artifacts(
        y,
        s,
        [f"{i}.jpg" for i in range(60)],
        0.5,
        tmp_path,
        n_boot=20,
        sources=sources,
        parts={"both": ["good", "bad"]},
    )
    bs = m["by_source"]
    assert set(bs) == {"good", "bad", "both"}
    assert bs["good"]["n"] == bs["bad"]["n"] == 30 and bs["both"]["n"] == 60
    assert bs["good"]["roc_auc"] == 1.0 and bs["good"]["tpr_at_fpr_1pct"] == 1.0
    assert bs["bad"]["roc_auc"] < 0.9
    assert bs["both"]["accuracy"] == pytest.approx(m["accuracy"])
    assert "ci95" in bs["good"] and "tpr_at_fpr_1pct" in bs["good"]["ci95"]
    assert "per data folder" in format_report(m)
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert header.endswith(",source")
    with pytest.raises(ValueError, match="part 'x'"):
        write_eval_artifacts(y, s, ["p"] * 60, 0.5, tmp_path / "x", n_boot=0, sources=sources, parts={"x": ["zz"]})
