"""Evaluation: top-1/top-5 accuracy, and the paper's few-shot linear
evaluation on frozen pre-logits features.

Few-shot (MLP-Mixer section 3 "Metrics", after ViT section 4.1): for k
images per class, solve the L2-regularised least-squares problem from the
frozen representation to {-1, 1}^K targets in closed form, and report the
accuracy of its argmax on the evaluation split. As big_vision's evaluator:
features standardised with the few-shot set's mean and std (+1e-5), a
constant bias column of 100 (large, so almost unregularised), l2 = 2^10.
"""

import numpy as np

import keras

from keras_mixer.models._tools import prelogits_model

FEWSHOT_L2 = 2.0 ** 10
BIAS_CONSTANT = 100.0


def topk_correct(probabilities, targets, k):
    """Per-example 0/1: is one of the top-k classes a correct one?

    `targets` is one-hot or multi-hot (ReaL labels: any listed class counts);
    examples without any correct class (ReaL's unlabelled images) give NaN
    and are left out of the mean.
    """
    probabilities = np.asarray(probabilities, np.float64)
    targets = np.asarray(targets)
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    hit = np.take_along_axis(targets, top, axis=-1).max(axis=-1) > 0
    out = hit.astype(np.float64)
    out[targets.max(axis=-1) <= 0] = np.nan
    return out


def evaluate(model, dataset, steps=None):
    """Top-1 and top-5 accuracy of `model` over a dataset of (images,
    one-hot or multi-hot labels): `{"top1", "top5", "examples"}`."""
    top1, top5 = [], []
    for i, (images, labels) in enumerate(dataset):
        if steps is not None and i >= steps:
            break
        probs = keras.ops.convert_to_numpy(model.predict_on_batch(images))
        labels = np.asarray(labels)
        top1.append(topk_correct(probs, labels, 1))
        top5.append(topk_correct(probs, labels, min(5, labels.shape[-1])))
    top1, top5 = np.concatenate(top1), np.concatenate(top5)
    return {
        "top1": float(np.nanmean(top1)),
        "top5": float(np.nanmean(top5)),
        "examples": int(np.sum(~np.isnan(top1))),
    }


def features(model, dataset):
    """`(features float64 [N, D], integer labels [N])` over a dataset of
    (images, one-hot labels)."""
    extractor = prelogits_model(model)
    xs, ys = [], []
    for images, labels in dataset:
        xs.append(keras.ops.convert_to_numpy(extractor.predict_on_batch(images)))
        ys.append(np.argmax(np.asarray(labels), axis=-1))
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def fewshot_indices(labels, shots, seed=0):
    """The first `shots` examples of each class in a seeded permutation."""
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = []
    for c in np.unique(labels):
        members = order[labels[order] == c]
        if len(members) < shots:
            raise ValueError(
                f"Class {c} has {len(members)} training examples, fewer than "
                f"{shots} shots."
            )
        chosen.append(members[:shots])
    return np.sort(np.concatenate(chosen))


def fewshot_solve(x, y, num_classes, l2=FEWSHOT_L2):
    """Closed-form ridge regression to {-1, 1} targets.

    Returns `(mean, std, weights)` so that scores are
    `[(x - mean) / std, BIAS_CONSTANT] @ weights`. Solves the D x D system
    `(XᵀX + l2 I) W = XᵀY` when there are at least as many examples as
    features, else the N x N form `W = Xᵀ (XXᵀ + l2 I)⁻¹ Y` (equal by the
    push-through identity).
    """
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-5
    xb = _with_bias((x - mean) / std)
    targets = 2.0 * np.eye(num_classes)[y] - 1.0
    n, d = xb.shape
    if n >= d:
        weights = np.linalg.solve(xb.T @ xb + l2 * np.eye(d), xb.T @ targets)
    else:
        weights = xb.T @ np.linalg.solve(xb @ xb.T + l2 * np.eye(n), targets)
    return mean, std, weights


def _with_bias(x):
    return np.concatenate([x, np.full((len(x), 1), BIAS_CONSTANT)], axis=1)


def fewshot_accuracy(train_x, train_y, test_x, test_y, shots, num_classes,
                     l2=FEWSHOT_L2, seed=0):
    """Accuracy on `test` of the few-shot solution from `shots` per class."""
    index = fewshot_indices(train_y, shots, seed)
    mean, std, weights = fewshot_solve(train_x[index], train_y[index],
                                       num_classes, l2)
    scores = _with_bias((test_x - mean) / std) @ weights
    return float(np.mean(np.argmax(scores, axis=1) == test_y))


def fewshot(model, train_dataset, test_dataset, shots=(1, 5, 10, 25),
            num_classes=None, l2=FEWSHOT_L2, seeds=(0,)):
    """`{k: mean accuracy over seeds}` of the few-shot linear evaluation."""
    train_x, train_y = features(model, train_dataset)
    test_x, test_y = features(model, test_dataset)
    if num_classes is None:
        num_classes = int(max(train_y.max(), test_y.max())) + 1
    return {
        int(k): float(np.mean([
            fewshot_accuracy(train_x, train_y, test_x, test_y, int(k),
                             num_classes, l2, seed) for seed in seeds
        ]))
        for k in shots
    }
