"""Metrics against values computed by hand."""

import numpy as np
import pytest

from dfdetect.core.metrics import bootstrap_ci, choose_threshold, compute_metrics, eer

Y = [0, 0, 0, 1, 1, 1]
S = [0.1, 0.4, 0.6, 0.35, 0.8, 0.9]


def test_point_metrics_by_hand():
    m = compute_metrics(Y, S, 0.5)
    # preds 0 0 1 0 1 1 -> TP 2, FP 1, FN 1, TN 2
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["misclassified"] == {"real_as_fake": 1, "fake_as_real": 1}
    # 7 of the 9 (fake, real) pairs are ranked correctly.
    assert m["roc_auc"] == pytest.approx(7 / 9)
    # AP = 1/3*1 + 1/3*1 + 1/3*(3/5)
    assert m["average_precision"] == pytest.approx(2 / 3 + 0.2)
    assert m["classification_report"]["real"]["support"] == 3


def test_eer_by_hand():
    rate, thr = eer(Y, S)
    assert rate == pytest.approx(1 / 3)
    assert eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0] == pytest.approx(0.0)


def test_threshold_rules():
    assert choose_threshold(Y, S, "0.7") == 0.7
    t = choose_threshold(Y, S, "f1")
    assert compute_metrics(Y, S, t)["f1"] >= compute_metrics(Y, S, 0.5)["f1"]
    t1 = choose_threshold(Y, S, "fpr1")
    assert compute_metrics(Y, S, t1)["confusion_matrix"][0][1] == 0  # no real flagged at FPR <= 1%
    with pytest.raises(ValueError):
        choose_threshold(Y, S, "best")


def test_bootstrap_ci_brackets_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    m = compute_metrics(y, s)
    ci = bootstrap_ci(y, s, n_boot=200)
    for k in ("accuracy", "roc_auc", "f1", "eer"):
        lo, hi = ci[k]
        assert lo <= m[k] <= hi and hi - lo < 0.2
