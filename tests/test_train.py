"""End-to-end training on a tiny model: every artifact, bad files, exact resume, atomic checkpoints."""

import csv
import json

import numpy as np
import pytest
import torch

from dfdetect.data.datasets import read_manifest
from dfdetect.engine.train import HISTORY_COLUMNS, fit
from dfdetect.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.conftest import tiny_config


def test_run_folder_holds_every_artifact(tiny_run):
    for name in (
        "config.yaml",
        "split.csv",
        "history.csv",
        "curves.png",
        "last.pt",
        "best.pt",
        "bad_files.txt",
        "summary.json",
    ):
        assert (tiny_run / name).is_file(), name
    for name in (
        "metrics.json",
        "classification_report.txt",
        "predictions.csv",
        "confusion_matrix.png",
        "misclassified.png",
        "roc.png",
    ):
        assert (tiny_run / "eval_test" / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(tiny_run / "history.csv")))
    assert list(rows[0]) == HISTORY_COLUMNS and len(rows) == 3
    assert [r["phase"] for r in rows] == ["warmup", "finetune", "finetune"]
    best = torch.load(tiny_run / "best.pt", weights_only=True)  # plain dict, no pickled classes
    assert best["arch"] == "tiny_efficientnet" and best["classes"] == ["real", "fake"]
    assert best["data_config"]["input_size"] == [3, 48, 48] and 0 <= best["threshold"] <= 1
    m = json.loads((tiny_run / "eval_test" / "metrics.json").read_text())
    test_items = [it for it in read_manifest(tiny_run / "split.csv") if it.split == "test"]
    bad = {"corrupt.jpg", "empty.jpg", "notes.png"}
    readable = [it for it in test_items if it.path.rsplit("/", 1)[-1] not in bad]
    assert m["n"] == len(readable) > 0
    assert m["n_real"] == sum(it.label == 0 for it in readable)
    assert set(m["ci95"]) >= {"accuracy", "roc_auc"} and m["split_sha256"] == best["split_sha256"]


def test_bad_files_skipped_counted_and_listed(tiny_run):
    listed = sorted(p.rsplit("/", 1)[-1] for p in (tiny_run / "bad_files.txt").read_text().split())
    assert listed == ["corrupt.jpg", "empty.jpg", "notes.png"]
    assert json.loads((tiny_run / "summary.json").read_text())["skipped_files"] == 3


def test_hostile_training_files_are_skipped_logged_once_and_listed(tmp_path, caplog):
    """A 2 x 2 PNG that decodes but fails the training augmentation (7 x 7 blur), a truncated JPEG in train and a
    1 x 40000 PNG in valid: each is skipped, warned about once in a two-epoch run, listed in bad_files.txt."""
    import io
    import logging

    from PIL import Image

    from dfdetect.data.io import open_image
    from tests.conftest import make_folder

    data = make_folder(tmp_path / "data", per_class=6)
    Image.new("RGB", (2, 2), (90, 90, 90)).save(data / "real" / "tiny.png")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (data / "fake" / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    Image.new("RGB", (1, 40000)).save(data / "fake" / "long.png")
    assert open_image(data / "real" / "tiny.png").size == (2, 2)  # it fails in preprocessing, not decoding
    splits = ["train"] * 4 + ["valid", "test"]  # per class; the hostile files go where they hurt
    rows = ["path,label,split"]
    for label, cls in enumerate(("real", "fake")):
        for split, p in zip(splits, sorted((data / cls).glob(f"{cls}_*.jpg"))):
            rows.append(f"{cls}/{p.name},{label},{split}")
    rows += ["real/tiny.png,0,train", "fake/truncated.jpg,1,train", "fake/long.png,1,valid"]
    (tmp_path / "split.csv").write_text("\n".join(rows) + "\n")
    cfg = tiny_config(data, tmp_path / "runs", epochs=1, warmup_epochs=1, early_stopping=0)
    cfg.data.manifest = str(tmp_path / "split.csv")
    cfg.augment.blur_prob = 1.0
    with caplog.at_level(logging.WARNING, logger="dfdetect"):
        run = fit(cfg)
    assert len(list(csv.DictReader(open(run / "history.csv")))) == 2
    hostile = ["long.png", "tiny.png", "truncated.jpg"]
    assert sorted(p.rsplit("/", 1)[-1] for p in (run / "bad_files.txt").read_text().split()) == hostile
    assert json.loads((run / "summary.json").read_text())["skipped_files"] == 3
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert sorted(next(h for h in hostile if h in m) for m in skips) == hostile, skips
    assert "cannot be preprocessed" in next(m for m in skips if "tiny.png" in m)


def test_test_split_never_trained_on(tiny_run):
    items = read_manifest(tiny_run / "split.csv")
    train = {it.path for it in items if it.split == "train"}
    assert train and not train & {it.path for it in items if it.split in ("valid", "test")}


class _Kill(Exception):
    pass


def test_resume_after_kill_is_exact(tiny_data, tmp_path):
    full = fit(tiny_config(tiny_data, tmp_path, name="full", early_stopping=0))

    def kill_after_2(epoch, row):
        if epoch == 2:
            raise _Kill

    with pytest.raises(_Kill):
        fit(tiny_config(tiny_data, tmp_path, name="killed", early_stopping=0), on_epoch_end=kill_after_2)
    resumed = fit(None, resume=tmp_path / "killed")  # config comes from the run folder
    a = list(csv.DictReader(open(full / "history.csv")))
    b = list(csv.DictReader(open(resumed / "history.csv")))
    drop = {"seconds", "images_per_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b
    ]
    wa, wb = load_checkpoint(full / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_takes_a_run_folder_or_its_last_pt(tiny_run, clean_copy, tmp_path):
    """best.pt (no optimizer state), a folder without last.pt or a missing path: one clear error saying what
    --resume takes; the run's last.pt itself is taken as its folder."""
    from typer.testing import CliRunner

    from dfdetect.cli import app

    with pytest.raises(CheckpointError, match=f"--resume takes a run folder.*--resume {tiny_run}"):
        fit(None, resume=tiny_run / "best.pt")
    r = CliRunner().invoke(app, ["train", "--resume", str(tiny_run / "best.pt")])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "best.pt" in errors[0] and "--resume takes a run folder" in errors[0]
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "empty", tmp_path / "nowhere"):
        with pytest.raises(FileNotFoundError, match="--resume takes a run folder"):
            fit(None, resume=where)
    run = clean_copy(tiny_run)  # a finished run: resuming it only redoes the final evaluation
    assert fit(None, resume=run / "last.pt") == run


def test_new_run_refuses_to_overwrite(tiny_run):
    from dfdetect.core.config import TrainConfig

    cfg = TrainConfig.load_yaml(tiny_run / "config.yaml")
    with pytest.raises(FileExistsError, match="--resume"):
        fit(cfg)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"arch": "a", "classes": [], "data_config": {}, "model": {}, "v": 1}, path)

    def torn_save(obj, f):
        f.write(b"partial garbage")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"arch": "a", "classes": [], "data_config": {}, "model": {}, "v": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "x.pt")


def test_a_foreign_file_named_pt_is_named_foreign_and_a_torn_one_truncated(tmp_path):
    import torch

    from dfdetect.models.checkpoint import CheckpointError, load_checkpoint

    text = tmp_path / "notes.pt"
    text.write_text("hello, not a model\n")
    with pytest.raises(CheckpointError, match="notes.pt is not a dfdetect checkpoint: not a file written by torch"):
        load_checkpoint(text)
    whole = tmp_path / "whole.pt"
    torch.save({"format": "x", "model": {"w": torch.zeros(64, 64)}}, whole)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"torn.pt is truncated or not a dfdetect checkpoint \(\w+: "):
        load_checkpoint(torn)
    with pytest.raises(CheckpointError, match="whole.pt is not a dfdetect checkpoint .missing"):
        load_checkpoint(whole)


def test_cut_short_safetensors_is_named_truncated(tmp_path):
    """An interrupted download (the file cut anywhere past its header) is refused before any tensor is read."""
    from dfdetect.runtime.detector import DEFAULT_WEIGHTS

    data = DEFAULT_WEIGHTS.read_bytes()
    for cut in (7, 100, len(data) // 2, len(data) - 1):
        (tmp_path / "w.safetensors").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="w.safetensors.*truncated"):
            load_checkpoint(tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"not json")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(tmp_path / "w.safetensors")


def test_teacher_sees_the_student_batch_as_its_own_preprocessing(tiny_run, tiny_data):
    """A student batch (other size, other normalisation) re-rendered for the teacher gives the teacher's own
    scores: what distillation's soft targets rest on."""
    from PIL import Image

    from dfdetect import Detector
    from dfdetect.data.preprocess import preprocess
    from dfdetect.engine.distill import Teachers

    det = Detector.load(tiny_run / "best.pt", device="cpu")
    teachers = Teachers([tiny_run / "best.pt"])
    files = sorted((tiny_data / "real").glob("real_*.jpg"))[:4]
    imgs = [Image.open(f).convert("RGB").resize((48, 48)) for f in files]  # teacher input size: no resampling
    student_dc = dict(det.data_config, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    batch = torch.from_numpy(np.stack([preprocess(im, student_dc) for im in imgs]))
    got = teachers.probs(batch, student_dc)[:, 1].numpy()
    want = np.array([det.score_image(im) for im in imgs])
    assert np.allclose(got, want, atol=1e-4)
    # a 64 px student batch is resized to the teacher's 48 px: scores stay close to the teacher's own
    big = torch.from_numpy(
        np.stack([preprocess(im.resize((64, 64)), dict(student_dc, input_size=[3, 64, 64], resize=64)) for im in imgs])
    )
    assert np.abs(teachers.probs(big, student_dc)[:, 1].numpy() - want).max() < 0.1


def test_bf16_teachers_give_soft_targets_close_to_fp32(tiny_run, tiny_data):
    """``teacher_amp`` runs the teachers in bf16 only where the CPU computes it natively; the soft targets stay
    within bf16's rounding of the fp32 ones (they are targets, never shipped scores)."""
    from dfdetect.core.device import cpu_has_native_bf16
    from dfdetect.engine.distill import Teachers

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 / AMX): teacher_amp is a no-op here by design")
    ckpt = load_checkpoint(tiny_run / "best.pt")
    dc = ckpt["data_config"]
    batch = torch.randn(6, *dc["input_size"])
    fp32, bf16 = Teachers([tiny_run / "best.pt"]), Teachers([tiny_run / "best.pt"], amp=True)
    p32, p16 = fp32.probs(batch, dc), bf16.probs(batch, dc)
    assert p16.dtype == torch.float32 and torch.allclose(p16.sum(1), torch.ones(6))
    assert not torch.equal(p32, p16)  # bf16 really ran
    assert (p32 - p16).abs().max() < 2e-2


def test_distillation_run(tiny_run, tiny_data, tmp_path):
    cfg = tiny_config(
        tiny_data, tmp_path, teacher=[str(tiny_run / "best.pt")], distill_alpha=0.7, epochs=1, warmup_epochs=0
    )
    cfg.model.img_size = cfg.model.resize_to = 40  # student smaller than its 48 px teacher
    cfg.augment.mixup = 0.2
    run = fit(cfg)
    best = load_checkpoint(run / "best.pt")
    assert best["data_config"]["input_size"] == [3, 40, 40]
    assert best["config"]["teacher"] == [str(tiny_run / "best.pt")] and best["config"]["distill_alpha"] == 0.7
    assert (run / "eval_test" / "metrics.json").is_file()
    with pytest.raises(ValueError, match="distill_alpha"):
        fit(tiny_config(tiny_data, tmp_path, teacher=[str(tiny_run / "best.pt")], distill_alpha=1.5, name="bad"))


def test_a_onednn_cap_below_bf16_means_no_native_bf16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (the AVX2 stand-in) takes oneDNN's bf16 kernels away on any CPU: OpenVINO then
    cannot compile bf16 and torch emulates it, so neither may be chosen as the fast path."""
    import torch

    from dfdetect.core.device import amp_dtype, cpu_features, cpu_has_native_bf16, onednn_allows_bf16

    hardware = cpu_features()["avx512_bf16"] or cpu_features()["amx_bf16"]
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    caps = [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True), ("AVX512_CORE_AMX", True)]
    for cap, allowed in caps:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert onednn_allows_bf16() is allowed
        assert cpu_has_native_bf16() is (hardware and allowed)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert amp_dtype(torch.device("cpu"), True) is None
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # oneDNN's older name for the same cap
    assert not onednn_allows_bf16()
    monkeypatch.delenv("DNNL_MAX_CPU_ISA")
    assert onednn_allows_bf16() and cpu_has_native_bf16() is hardware


def test_cpu_precision_follows_the_hardware():
    """bf16 autocast on CPU only where the CPU computes bf16 natively; fp32 whenever amp is off."""
    import torch

    from dfdetect.core.device import amp_dtype, autocast, cpu_has_native_bf16, precision_name

    cpu = torch.device("cpu")
    assert amp_dtype(cpu, False) is None and precision_name(cpu, False) == "fp32"
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast(cpu, True):
        out = conv(torch.randn(1, 3, 8, 8))
    assert out.dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    with autocast(cpu, False):
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.float32


@pytest.mark.parametrize("amp", [False, True])
def test_cpu_training_in_channels_last_and_bf16(tiny_data, tmp_path, amp, caplog):
    """A CPU run in channels-last (and bf16 where native) trains, logs its precision and saves fp32 weights."""
    import logging

    import torch

    from dfdetect.core.device import cpu_has_native_bf16
    from dfdetect.engine.train import fit

    if amp and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 / AMX): the bf16 path is off here by design")
    cfg = tiny_config(tiny_data, tmp_path, epochs=1, warmup_epochs=0, amp=amp, channels_last=True, evaluate_test=False)
    with caplog.at_level(logging.INFO, logger="dfdetect"):
        run = fit(cfg)
    expected = "bf16 autocast, channels-last" if amp else "fp32, channels-last"
    assert any(expected in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records][:5]
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


def test_benchmark_train_sweep_rows(monkeypatch):
    """benchmark-train --sweep times every layout x precision in one process; bf16 rows skip without native bf16."""
    import json

    from typer.testing import CliRunner

    from dfdetect.cli import app
    from dfdetect.core.device import cpu_has_native_bf16

    args = ["benchmark-train", "-m", "tiny_efficientnet", "--img-size", "32", "-b", "4", "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--sweep", "--steps", "1", "--warmup", "1", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("{") :])["rows"]
    assert [r["setting"] for r in rows] == [
        "contiguous + fp32",
        "channels-last + fp32",
        "contiguous + bf16",
        "channels-last + bf16",
    ]
    assert rows[1]["channels_last"] and not rows[0]["channels_last"]
    for r in rows[2:]:
        assert ("skipped" in r) != cpu_has_native_bf16()
        if "skipped" not in r:
            assert r["precision"] == "bf16 autocast" and r["images_per_s"] > 0
