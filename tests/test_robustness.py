"""Robustness sweep, leakage audit and calibration: perturbations, tables, planted duplicates, synthetic scores."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dfdetect.analysis.robustness import perturb as P
from dfdetect.cli import app
from dfdetect.engine import calibration as C

runner = CliRunner()


@pytest.fixture(scope="module")
def face() -> Image.Image:
    """A textured 96x80 RGB test image (smooth gradient + fine detail), deterministic."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:80, 0:96]
    base = np.stack([xx * 2.5, yy * 3.0, (xx + yy) * 1.4], -1)
    arr = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _jpeg_quality_of(img: Image.Image, quality: int) -> int:
    import io

    from dfdetect.analysis.forensics.jpeg import estimate_quality

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as j:
        return estimate_quality(j.quantization)[0]


def _high_freq_energy(img: Image.Image) -> float:
    g = np.asarray(img.convert("L"), dtype=np.float64)
    return float((np.diff(g, axis=0) ** 2).mean() + (np.diff(g, axis=1) ** 2).mean())


# ---- perturbations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [95, 75, 50, 30])
def test_jpeg_perturbation_quality_and_determinism(face, q, monkeypatch):
    import io

    from dfdetect.analysis.forensics.jpeg import estimate_quality

    saved = {}
    real_save = Image.Image.save

    def spy(self, fp, format=None, **kw):  # noqa: A002 - PIL's own keyword
        real_save(self, fp, format=format, **kw)
        if format == "JPEG":
            saved["bytes"] = fp.getvalue()

    monkeypatch.setattr(Image.Image, "save", spy)
    out = P.jpeg(face, q)
    with Image.open(io.BytesIO(saved["bytes"])) as j:
        assert estimate_quality(j.quantization)[0] == q
    assert out.size == face.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(P.jpeg(face, q)))
    assert not np.array_equal(np.asarray(out), np.asarray(face))


def test_lower_jpeg_quality_loses_more(face):
    err = [np.abs(np.asarray(P.jpeg(face, q), float) - np.asarray(face, float)).mean() for q in (95, 75, 50, 30)]
    assert err == sorted(err)


@pytest.mark.parametrize("factor,size", [(0.5, (48, 40)), (0.75, (72, 60)), (1.25, (120, 100))])
def test_rescale_sizes(face, factor, size):
    out = P.rescale(face, factor)
    assert out.size == size and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(P.rescale(face, factor)))


def test_blur_reduces_high_frequency_energy(face):
    e = [_high_freq_energy(face)] + [_high_freq_energy(P.gaussian_blur(face, s)) for s in (0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(e, e[1:]))
    assert P.gaussian_blur(face, 1.0).size == face.size


def test_noise_is_seeded_and_has_the_right_strength(face):
    flat = Image.new("RGB", (64, 64), (128, 128, 128))
    a, b, c = P.gaussian_noise(flat, 5, seed=3), P.gaussian_noise(flat, 5, seed=3), P.gaussian_noise(flat, 5, seed=4)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    std = (np.asarray(a, float) - 128).std()
    assert 4.5 < std < 5.5
    assert P.image_seed("real/x.jpg") == P.image_seed("real/x.jpg") != P.image_seed("real/y.jpg")


def test_center_crop_and_png_control(face):
    out = P.center_crop(face, 0.8)
    assert out.size == (77, 64)
    assert np.array_equal(np.asarray(out), np.asarray(face)[8:72, 9:86])
    assert np.array_equal(np.asarray(P.png(face)), np.asarray(face))  # lossless: only the container changes


def test_condition_list_and_selection():
    conds = P.default_conditions()
    names = [c.name for c in conds]
    assert names[0] == "none" and len(names) == len(set(names))
    assert {c.family for c in conds} == {"none", "jpeg", "resize", "blur", "noise", "crop", "format"}
    sel = P.select_conditions(["jpeg", "blur_1"])
    assert [c.name for c in sel] == ["none", "jpeg_q95", "jpeg_q75", "jpeg_q50", "jpeg_q30", "blur_1"]
    with pytest.raises(ValueError, match="unknown condition"):
        P.select_conditions(["sepia"])


# ---- sweep -----------------------------------------------------------------------------------------------


def test_sweep_on_tiny_run_writes_table_and_plots(tiny_run, tiny_data, tmp_path):
    out = tmp_path / "rob"
    r = runner.invoke(
        app,
        ["robustness", str(tiny_run / "best.pt"), "--data", str(tiny_data), "--out", str(out), "--batch-size", "8"],
    )
    assert r.exit_code == 0, r.output
    with open(out / "robustness.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["condition"] for row in rows] == [c.name for c in P.default_conditions()]
    n = int(rows[0]["n"])
    assert n > 0 and all(int(row["n"]) == n for row in rows)
    for row in rows:
        for k in ("accuracy", "roc_auc", "tpr_at_fpr_1pct", "tpr_at_fpr_0.5pct", "fpr_real", "eer"):
            v = float(row[k])
            assert math.isnan(v) or 0.0 <= v <= 1.0, (k, v)
        assert float(row["tpr_at_fpr_0.5pct"]) <= float(row["tpr_at_fpr_1pct"]) + 1e-12
    md = (out / "robustness.md").read_text()
    assert md.count("\n| ") >= len(rows) and "jpeg_q30" in md
    for fam in ("jpeg", "resize", "blur", "noise", "crop", "format"):
        assert (out / f"robustness_{fam}.png").stat().st_size > 1000
    # the sweep scores the run's test split (split.csv made from this folder), not every image
    split = [ln for ln in (tiny_run / "split.csv").read_text().splitlines()[2:] if ln.endswith(",test")]
    good_test = [ln for ln in split if "corrupt" not in ln and "empty" not in ln and "notes" not in ln]
    assert n == len(good_test)
    # the unperturbed condition agrees with scoring the same files directly
    from dfdetect.runtime.detector import Detector

    scores = np.load(out / "robustness_scores.npz")
    det = Detector.load(tiny_run / "best.pt", device="cpu")
    direct = [det.score_image(Image.open(tiny_data / p).convert("RGB")) for p in scores["paths"][:4]]
    assert np.allclose(direct, scores["none"][:4], atol=1e-5)


def test_sweep_condition_filter_and_errors(tiny_run, tiny_data, tmp_path):
    r = runner.invoke(
        app,
        ["robustness", str(tiny_run / "best.pt"), "--data", str(tiny_data), "-o", str(tmp_path), "-c", "noise_5"],
    )
    assert r.exit_code == 0, r.output
    with open(tmp_path / "robustness.csv") as f:
        assert [row["condition"] for row in csv.DictReader(f)] == ["none", "noise_5"]
    r = runner.invoke(app, ["robustness", str(tiny_run / "best.pt"), "--data", str(tiny_data), "-c", "sepia"])
    assert r.exit_code == 2 and "unknown condition" in r.output


def test_sweep_compares_several_models_side_by_side(tiny_run, tiny_data, tmp_path):
    import shutil

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tiny_run / "best.pt", other / "best.pt")
    shutil.copy(tiny_run / "split.csv", other / "split.csv")
    out = tmp_path / "cmp"
    args = ["robustness", str(tiny_run / "best.pt"), str(other / "best.pt"), "--data", str(tiny_data)]
    r = runner.invoke(app, [*args, "-o", str(out), "-c", "jpeg_q50,blur_1", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert {row["model"] for row in rows} == {tiny_run.name, "other"}
    assert [row["condition"] for row in rows if row["model"] == "other"] == ["none", "jpeg_q50", "blur_1"]
    # each model's own sweep is kept, and the side-by-side table repeats its numbers
    for name in (tiny_run.name, "other"):
        with open(out / name / "robustness.csv") as f:
            own = {row["condition"]: row["roc_auc"] for row in csv.DictReader(f)}
        assert own == {row["condition"]: row["roc_auc"] for row in rows if row["model"] == name}
    # the same weights under two names score identically
    a = [row["accuracy"] for row in rows if row["model"] == "other"]
    assert a == [row["accuracy"] for row in rows if row["model"] == tiny_run.name]
    assert (out / "compare_roc_auc.png").stat().st_size > 1000
    assert "AUC other" in (out / "compare.md").read_text()
    # rerun: finished sweeps are reused, not re-scored (their files stay untouched); other settings re-score
    stamp = (out / "other" / "robustness_scores.npz").stat().st_mtime_ns
    r = runner.invoke(app, [*args, "-o", str(out), "-c", "jpeg_q50,blur_1", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert (out / "other" / "robustness_scores.npz").stat().st_mtime_ns == stamp
    r = runner.invoke(app, [*args, "-o", str(out), "-c", "jpeg_q50", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert (out / "other" / "robustness_scores.npz").stat().st_mtime_ns != stamp


# ---- audit -----------------------------------------------------------------------------------------------


def _audit_folder(root: Path, per_class: int = 10, fake_format: str = "JPEG") -> Path:
    """Distinct images per class: real as JPEG q90, fake as ``fake_format``."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            # smooth random Gaussian blobs: distinct perceptual hashes, stable under re-encoding
            chans = []
            for _ in range(3):
                v = np.zeros((64, 64))
                for cx, cy, sd, amp in rng.uniform([0, 0, 0.08, -1], [1, 1, 0.3, 1], (4, 4)):
                    v += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sd * sd))
                chans.append(v)
            arr = np.stack(chans, -1)
            arr = (arr - arr.min()) / (arr.max() - arr.min() + 1e-9) * 220 + 15
            img = Image.fromarray(arr.astype(np.uint8))
            if cls == "fake" and fake_format == "PNG":
                img.save(root / cls / f"{cls}_{i:02d}.png")
            else:
                img.save(root / cls / f"{cls}_{i:02d}.jpg", quality=90)
    return root


def test_audit_finds_a_planted_duplicate_across_splits(tmp_path):
    root = _audit_folder(tmp_path / "data")
    manifest = tmp_path / "split.csv"
    rows = []
    for cls, label in (("real", 0), ("fake", 1)):
        for i in range(10):
            rows.append((f"{cls}/{cls}_{i:02d}.jpg", label, "train" if i < 6 else "valid" if i < 8 else "test"))
    # plant: a train image, re-encoded at a lower quality, under another name in the test split
    Image.open(root / "real" / "real_01.jpg").save(root / "real" / "zz_copy.jpg", quality=70)
    rows.append(("real/zz_copy.jpg", 0, "test"))
    with open(manifest, "w", newline="") as f:
        f.write(f"# root: {root}\n")
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    r = runner.invoke(app, ["audit", str(root), "--manifest", str(manifest), "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "a" / "audit.json").read_text())
    cross = [d for d in rep["near_duplicates"]["pairs"] if d["kind"] == "across splits"]
    assert [(d["a"], d["b"]) for d in cross] == [("real/real_01.jpg", "real/zz_copy.jpg")]
    assert cross[0]["splits"] == ["test", "train"]
    assert any("across splits" in w for w in rep["warnings"])
    assert "WARNING" in r.output and "WARNING" in (tmp_path / "a" / "audit.md").read_text()
    assert not any("format alone" in w or "alone" in w for w in rep["warnings"])  # same container for both


def test_audit_flags_a_format_separable_dataset_and_within_folder_duplicates(tmp_path):
    root = _audit_folder(tmp_path / "data", fake_format="PNG")
    shutil.copy(root / "fake" / "fake_03.png", root / "fake" / "fake_03_copy.png")
    r = runner.invoke(app, ["audit", str(root), "--out", str(tmp_path / "a"), "--strict"])
    assert r.exit_code == 1, r.output
    rep = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert rep["near_duplicates"]["n_pairs"] == 1 and rep["near_duplicates"]["pairs"][0]["distance"] == 0
    assert any("format alone" in w for w in rep["warnings"])
    assert rep["separability"]["features"]["format"]["score"] == 1.0
    stats = rep["class_stats"]
    assert stats["real"]["format"] == {"JPEG": 10} and stats["fake"]["format"] == {"PNG": 11}
    assert stats["real"]["jpeg_quality"]["median"] == 90


def test_near_duplicate_pairs_match_brute_force():
    from dfdetect.data.neardup import near_duplicate_pairs

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = [base[i] ^ np.uint64(1 << int(b)) ^ np.uint64(1 << int(c)) for i, b, c in rng.integers(0, 40, (30, 3))]
    hs = [f"{int(h):016x}" for h in list(base) + flips]
    got = near_duplicate_pairs(hs, 3)
    ints = [int(h, 16) for h in hs]
    want = [
        (i, j, bin(ints[i] ^ ints[j]).count("1"))
        for i in range(len(ints))
        for j in range(i + 1, len(ints))
        if bin(ints[i] ^ ints[j]).count("1") <= 3
    ]
    assert got == want and len(want) >= 30


# ---- calibration -----------------------------------------------------------------------------------------


def test_ece_by_hand():
    y = [0, 0, 1, 1, 1]
    p = [0.1, 0.3, 0.35, 0.8, 0.9]
    # 5 bins: [0,.2): {0.1 -> y 0} |0-0.1| ; [.2,.4): {0.3, 0.35 -> y 0, 1} |0.5-0.325| ;
    # [.8,1]: {0.8, 0.9 -> y 1, 1} |1-0.85|
    want = (1 * 0.1 + 2 * 0.175 + 2 * 0.15) / 5
    assert C.ece(y, p, n_bins=5) == pytest.approx(want)
    assert C.ece([0, 1], [0.0, 1.0]) == 0.0
    assert C.ece([1, 1], [1.0, 1.0], n_bins=10) == 0.0  # p = 1 falls into the last bin


def test_temperature_scaling_on_synthetic_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    true_logit = (2 * y - 1) * 1.5 + rng.normal(0, 1.5, 2000)
    over = true_logit * 4  # an overconfident model: logits 4x too large
    t = C.fit_temperature(y, over)
    assert C.nll(y, over, t) <= C.nll(y, over, 1.0)
    assert 2.0 < t < 8.0
    res = C.calibrate_scores(y, over, "fpr1")
    assert res["nll_after"] <= res["nll_before"] and res["ece_after"] < res["ece_before"]
    p = C.sigmoid(over / res["temperature"])
    assert ((p >= res["threshold"]) & (y == 0)).sum() / (y == 0).sum() <= 0.01
    assert res["warnings"] == []  # 1000 real images, an informative model: nothing to warn about
    # logits from probabilities are exact for 2-class softmax
    assert np.allclose(C.logits_from_probs(C.sigmoid(np.array([-3.0, 0.0, 2.5]))), [-3.0, 0.0, 2.5])


def test_calibration_of_an_uninformative_model_on_a_tiny_split_warns():
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 0, 1, 1, 1])
    res = C.calibrate_scores(y, rng.normal(0, 0.01, 6), "fpr1")  # scores unrelated to the labels
    text = " | ".join(res["warnings"])
    assert "end of its search range" in text and "needs >= 100 real" in text
    good = (2 * np.tile([0, 1], 100) - 1) * 2.0 + rng.normal(0, 1, 200)
    assert C.calibrate_scores(np.tile([0, 1], 100), good, "eer")["warnings"] == []


def test_reliability_diagram_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 300)
    y = (rng.uniform(0, 1, 300) < p).astype(int)
    path = C.reliability_diagram(y, p, tmp_path / "rel.png")
    assert path.stat().st_size > 1000


def test_calibrate_cli_and_detector_uses_it(tiny_run, tmp_path):
    from dfdetect.models.checkpoint import load_checkpoint
    from dfdetect.runtime.detector import Detector

    new = tmp_path / "cal.pt"
    r = runner.invoke(app, ["calibrate", str(tiny_run / "best.pt"), "--out", str(new), "--target", "eer"])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(new)
    old = load_checkpoint(tiny_run / "best.pt")
    vs = old["valid_scores"]
    d = C.logits_from_probs(vs["scores"])
    assert C.nll(vs["labels"], d, ck["temperature"]) <= C.nll(vs["labels"], d, 1.0) + 1e-12
    assert ck["calibration"]["nll_after"] <= ck["calibration"]["nll_before"] + 1e-12
    assert "eer" in ck["threshold_rule"] and 0.0 <= ck["threshold"] <= 1.0
    assert (tmp_path / "cal_reliability.png").is_file() and (tmp_path / "cal_calibration.json").is_file()

    det0 = Detector.load(tiny_run / "best.pt", device="cpu")
    det1 = Detector.load(new, device="cpu")
    assert det1.temperature == pytest.approx(ck["temperature"]) and det1.threshold == pytest.approx(ck["threshold"])
    img = Image.open(_any_image(tiny_run)).convert("RGB")
    s0, s1 = det0.score_image(img), det1.score_image(img)
    want = float(C.sigmoid(C.logits_from_probs(s0, 1e-15) / ck["temperature"]))
    assert s1 == pytest.approx(want, abs=1e-5)
    # predict's default threshold is the calibrated one
    assert det1.predict_bytes(_jpeg_bytes(img)).threshold == pytest.approx(ck["threshold"])


def test_calibrated_safetensors_keep_fp32_and_score_like_the_model(tiny_run, tmp_path):
    """A calibrated .safetensors copy changes T and the threshold only (it was written in fp16, moving scores)."""
    from safetensors import safe_open

    from dfdetect.runtime.detector import Detector

    new = tmp_path / "cal.safetensors"
    r = runner.invoke(app, ["calibrate", str(tiny_run / "best.pt"), "--out", str(new), "--target", "eer"])
    assert r.exit_code == 0, r.output
    with safe_open(str(new), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F32"}  # noqa: SIM118
    det0, det1 = Detector.load(tiny_run / "best.pt", device="cpu"), Detector.load(new, device="cpu")
    img = Image.open(_any_image(tiny_run)).convert("RGB")
    want = float(C.sigmoid(C.logits_from_probs(det0.score_image(img), 1e-15) / det1.temperature))
    assert det1.score_image(img) == pytest.approx(want, abs=1e-6)


def test_calibrate_rescore_from_split(tiny_run, tmp_path):
    new = tmp_path / "cal2.pt"
    r = runner.invoke(app, ["calibrate", str(tiny_run / "best.pt"), "-o", str(new), "--rescore", "--target", "0.5"])
    assert r.exit_code == 0, r.output
    assert "rescored" in r.output
    from dfdetect.models.checkpoint import load_checkpoint

    ck = load_checkpoint(new)
    assert ck["threshold"] == 0.5 and ck["calibration"]["nll_after"] <= ck["calibration"]["nll_before"] + 1e-12


def _any_image(run: Path) -> Path:
    from dfdetect.data.datasets import read_manifest

    first = (run / "split.csv").read_text().split("\n", 1)[0]
    root = Path(first[len("# root: ") :])
    return next(root / it.path for it in read_manifest(run / "split.csv") if it.path.endswith("_000.jpg"))


def _jpeg_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_evaluate_writes_ece_and_reliability(tiny_run, tiny_data, tmp_path):
    from dfdetect.engine.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(tiny_run / "best.pt", tiny_data, tmp_path / "ev", device="cpu", workers=0, n_boot=10)
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert 0.0 <= saved["ece"] <= 1.0 and saved["ece"] == pytest.approx(m["ece"])
    assert (tmp_path / "ev" / "reliability.png").is_file()


@pytest.mark.slow  # two full evaluations with 1000-sample bootstraps: about a minute on a shared CPU
def test_evaluate_cli_reports_several_folders(tiny_run, tiny_data, clean_copy, tmp_path):
    other = clean_copy(tiny_data)
    r = runner.invoke(
        app,
        ["evaluate", str(tiny_run / "best.pt"), "-d", str(tiny_data), "-d", str(other), "-o", str(tmp_path / "ev")],
    )
    assert r.exit_code == 0, r.output
    assert f"== {tiny_data} " in r.output and f"== {other} " in r.output
    assert "data" in r.output.splitlines()[-3] or any(ln.startswith("data ") for ln in r.output.splitlines())
    assert (tmp_path / "ev" / tiny_data.name / "metrics.json").is_file()
    assert (tmp_path / "ev" / other.name / "metrics.json").is_file()
