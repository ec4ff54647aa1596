import numpy as np

from lesion.metrics import class_metrics, correct, tidy


def test_class_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    intact = np.array([[0, 1], [1, 0], [1, 2], [1, 0], [0, 2]])
    after = np.array([[0, 1], [0, 1], [2, 1], [1, 0], [2, 0]])
    m = class_metrics(after, labels, 3, intact)
    np.testing.assert_array_equal(m["n"], [2, 2, 1, 5])
    np.testing.assert_allclose(m["top1"], [1.0, 0.5, 1.0, 4 / 5])
    np.testing.assert_allclose(m["topk"], [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(m["lost"], [0, 1, 0, 1])  # sample 2: right before, wrong after
    np.testing.assert_array_equal(m["gained"], [1, 0, 1, 2])  # samples 1 and 4
    top1, topk = correct(intact, labels)
    assert top1.tolist() == [True, False, True, True, False] and topk.tolist() == [True, True, True, True, True]


def test_empty_class_is_nan_and_tidy_has_one_row_per_class_and_metric():
    m = class_metrics(np.array([[0], [0]]), np.array([0, 0]), 2)
    assert np.isnan(m["top1"][1])
    df = tidy(m, ("a", "b"))
    assert len(df) == 5 * 3 and set(df["class"]) == {0, 1, -1}
    assert df.query("class_name == 'all' and metric == 'top1'")["value"].item() == 1.0
