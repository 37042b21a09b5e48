"""Top-k accuracy (incl. ReaL multi-labels) and the few-shot linear solve."""

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer.training import data
from keras_mixer.training import evaluation


def test_topk_counts_any_listed_class_and_skips_unlabelled():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5],
                      [0.4, 0.4, 0.2]])
    one_hot = np.eye(3)[[1, 2, 0, 0]]
    np.testing.assert_array_equal(evaluation.topk_correct(probs, one_hot, 1),
                                  [1, 0, 0, 1])  # ties: the first class
    np.testing.assert_array_equal(evaluation.topk_correct(probs, one_hot, 2),
                                  [1, 1, 0, 1])
    multi = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 0], [1, 0, 1]])
    top1 = evaluation.topk_correct(probs, multi, 1)
    np.testing.assert_array_equal(top1[[0, 1, 3]], [1, 0, 1])
    assert np.isnan(top1[2])  # no label: left out of the mean


def _ridge_reference(x, y, num_classes, l2):
    """Ridge regression as an augmented least-squares problem:
    min ||Xw - Y||² + l2 ||w||² = lstsq([X; √l2 I], [Y; 0])."""
    mean, std = x.mean(0), x.std(0) + 1e-5
    xb = np.concatenate([(x - mean) / std, np.full((len(x), 1), 100.0)], 1)
    targets = 2.0 * np.eye(num_classes)[y] - 1.0
    d = xb.shape[1]
    a = np.concatenate([xb, np.sqrt(l2) * np.eye(d)])
    b = np.concatenate([targets, np.zeros((d, num_classes))])
    return np.linalg.lstsq(a, b, rcond=None)[0]


@pytest.mark.parametrize("n, d", [(60, 8), (12, 40)])  # both closed forms
def test_fewshot_solution_is_the_ridge_minimiser(n, d):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5, d) + rng.normal(size=d)
    y = rng.integers(0, 4, n)
    _, _, weights = evaluation.fewshot_solve(x, y, 4, l2=3.0)
    np.testing.assert_allclose(weights, _ridge_reference(x, y, 4, 3.0),
                               rtol=1e-7, atol=1e-9)


def test_fewshot_separable_classes_and_shot_selection():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16)) * 4
    y = np.repeat(np.arange(5), 30)
    x = centres[y] + rng.normal(size=(150, 16))
    index = evaluation.fewshot_indices(y, 3, seed=0)
    assert np.bincount(y[index]).tolist() == [3] * 5
    accuracy = evaluation.fewshot_accuracy(x, y, x, y, 5, 5, l2=1.0)
    assert accuracy > 0.95
    with pytest.raises(ValueError, match="fewer than 40 shots"):
        evaluation.fewshot_indices(y, 40)


def test_evaluate_and_fewshot_on_a_model():
    model = keras_mixer.MLPMixer(4, 32, 2, 16, 64, input_shape=(16, 16, 3), classes=10)
    ds, _ = data.build_dataset("digits", "validation", image_size=16,
                               batch_size=64, training=False)
    result = evaluation.evaluate(model, ds)
    assert result["examples"] == 360
    # A zero head predicts class 0 for every image (ties -> first class).
    _, labels = data.load_digits()
    share = np.mean(labels[data.digits_split("validation")] == 0)
    assert result["top1"] == pytest.approx(share)
    train_ds, _ = data.build_dataset("digits", "train", image_size=16,
                                     batch_size=128, training=False)
    shots = evaluation.fewshot(model, train_ds, ds, shots=(1, 10), num_classes=10)
    # Even random Mixer features separate digits far above chance (0.1).
    assert set(shots) == {1, 10} and shots[10] > 0.5 and shots[10] >= shots[1] - 0.05
    with pytest.raises(ValueError, match="no 'avg_pool' or 'max_pool'"):
        evaluation.prelogits_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
