"""Confusion matrix and metrics against numbers worked out by hand; the cost of CER per class."""

import numpy as np
import pytest

from sed_deploy.benchmarks.accuracy.metrics import (
    ConfusionMatrix,
    EvaluationError,
    RejectionStats,
    confused_pairs,
    most_confused_classes,
    scores,
)

IGNORE = 255
# two images, three classes; ignore pixels in both
GT = [np.array([[0, 0, 1], [1, 2, IGNORE]]), np.array([[2, 2], [0, IGNORE]])]
PRED = [np.array([[0, 1, 1], [1, 2, 0]]), np.array([[2, 0], [0, 1]])]
# counted pixels: (0,0) (0,1) (1,1) (1,1) (2,2) | (2,2) (2,0) (0,0)
EXPECTED = np.array([[2, 1, 0],
                     [0, 2, 0],
                     [1, 0, 2]])


def test_confusion_matrix_by_hand():
    confusion = ConfusionMatrix(3)
    first = confusion.update(GT[0], PRED[0], IGNORE)
    np.testing.assert_array_equal(first, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    confusion.update(GT[1], PRED[1], IGNORE)
    np.testing.assert_array_equal(confusion.matrix, EXPECTED)
    assert confusion.matrix.dtype == np.int64


def test_metrics_by_hand():
    # gt pixels [3,2,3], predicted [3,3,2], correct [2,2,2]
    result = scores(EXPECTED)
    np.testing.assert_allclose(result.iou, [2 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(result.accuracy, [2 / 3, 1, 2 / 3])
    assert result.miou == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert result.fwiou == pytest.approx(3 / 8 * 1 / 2 + 2 / 8 * 2 / 3 + 3 / 8 * 2 / 3)
    assert result.pixel_accuracy == pytest.approx(6 / 8)
    assert result.mean_accuracy == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert result.summary()["classes_present"] == 3 and result.summary()["pixels"] == 8


def test_classes_absent_from_the_ground_truth_are_not_in_the_mean():
    matrix = np.zeros((4, 4), dtype=np.int64)
    matrix[:3, :3] = EXPECTED
    matrix[0, 3] = 4  # class 3 predicted on four pixels of class 0, never in the ground truth
    result = scores(matrix)
    assert result.iou[3] == 0 and np.isnan(result.accuracy[3])
    assert result.iou[0] == pytest.approx(2 / (7 + 3 - 2))
    assert result.miou == pytest.approx((2 / 8 + 2 / 3 + 2 / 3) / 3)
    assert np.isnan(scores(np.zeros((2, 2), dtype=np.int64)).miou)
    empty = scores(np.zeros((2, 2), dtype=np.int64)).summary()
    assert empty["miou"] is None and empty["pixels"] == 0


def test_bad_input_is_one_line_each():
    confusion = ConfusionMatrix(3)
    with pytest.raises(EvaluationError, match=r"ground truth.s size \[2, 3\], got \[3, 2\]"):
        confusion.update(GT[0], PRED[0].T)
    with pytest.raises(EvaluationError, match=r"predicted class ids must be in \[0, 3\), got 1 pixel\(s\) such as 7"):
        confusion.update(GT[0], np.where(PRED[0] == 2, 7, PRED[0]), IGNORE)
    with pytest.raises(EvaluationError, match=r"ground-truth class ids must be in \[0, 3\)"):
        confusion.update(GT[0], PRED[0])  # the ignore value is not ignored without ignore_index
    np.testing.assert_array_equal(confusion.matrix, 0)
    with pytest.raises(EvaluationError, match="at least one class"):
        ConfusionMatrix(0)


def test_most_confused():
    assert confused_pairs(EXPECTED) == [(0, 1, 1), (2, 0, 1)]
    # errors: class 0: 1 missed + 1 wrongly predicted, class 1: 1, class 2: 1
    np.testing.assert_array_equal(most_confused_classes(EXPECTED, 1), [0])
    np.testing.assert_array_equal(most_confused_classes(EXPECTED, 10), [0, 1, 2])


def test_rejection_cost_per_class():
    stats = RejectionStats(4)
    # image 1: classes 0, 1, 2 present; 2 dropped before decoder2, 1 before decoder3
    rejected = stats.update(np.array([5, 3, 2, 0]), (np.array([0, 1, 2, 3]), np.array([0, 1, 3]), np.array([0, 3])))
    np.testing.assert_array_equal(rejected, [1, 2])
    # image 2: class 1 present and kept, class 3 present and dropped before decoder1
    stats.update(np.array([0, 4, 0, 6]), (np.array([1]), np.array([1]), np.array([1])))
    rows = {r["name"]: r for r in stats.per_class(["a", "b", "c", "d"])}
    assert set(rows) == {"b", "c", "d"}
    assert rows["b"]["present_images"] == 2 and rows["b"]["rejected_images"] == 1
    assert rows["b"]["rejection_rate"] == 0.5 and rows["b"]["rejected_gt_pixels"] == 3
    assert rows["b"]["rejected_at"] == {"decoder1": 0, "decoder2": 0, "decoder3": 1}
    assert rows["c"]["rejected_at"] == {"decoder1": 0, "decoder2": 1, "decoder3": 0}
    assert rows["d"]["rejected_at"] == {"decoder1": 1, "decoder2": 0, "decoder3": 0}
    assert rows["d"]["rejected_gt_pixels"] == 6
    assert [r["name"] for r in stats.per_class(["a", "b", "c", "d"])][-1] == "b"  # the lowest rate last
