"""What every export shares: the backend and classifier checks, the
comparison of a written file with the Keras model, and the SavedModel writer
(TFLite converts from one)."""

import numpy as np
import tensorflow as tf

import keras

from keras_mixer.checkpoints import assign


def require_tensorflow():
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "Export writes TensorFlow graphs: run it under the TensorFlow "
            f"backend (KERAS_BACKEND=tensorflow), not {keras.backend.backend()!r}. "
            "A model trained on another backend can be saved as .keras and "
            "exported from there."
        )


def check_classifier(model):
    """The model's input size and whether its output is already softmax;
    refuses a model that is no classifier or has NaN/Inf weights."""
    try:
        predictions = model.get_layer("predictions")
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no classification head ('predictions' "
            "layer): export a keras_mixer classifier (include_top=True)."
        ) from None
    shape = model.input_shape
    if len(shape) != 4 or None in shape[1:] or shape[-1] != 3:
        raise ValueError(
            f"Export needs a fixed RGB input size; the model takes {shape}."
        )
    activation = keras.activations.serialize(predictions.activation)
    name = activation if isinstance(activation, str) else activation.get(
        "config", {}).get("name", "")
    assign.check_finite(model, f"Model {model.name!r}")
    return shape[1], shape[2], name == "softmax"

def write_saved_model(model, path, signatures):
    """`tf.saved_model.save` of the signatures with the model's variables.

    Each weight is stored once, in the SavedModel's variables/ files (Keras
    3.15's ExportArchive stores every weight twice, under `variables/` and
    `_all_variables/`, which doubles an H/14 export to 3.5 GB), and none in
    the graph protobuf, so the 2 GB protobuf limit never applies.
    """
    module = tf.Module()
    # With the TensorFlow backend a Keras variable wraps a tf.Variable.
    module.model_variables = [v.value for v in model.weights]
    for name, function in signatures.items():
        setattr(module, name, function)
    tf.saved_model.save(module, path, signatures=signatures)


def relative_error(got, expected):
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return np.inf
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def check_agreement(got, expected, tolerance, what):
    error = relative_error(got, expected)
    if not error < tolerance:
        raise RuntimeError(
            f"{what} differs from the Keras model by relative error "
            f"{error:.3g} (tolerance {tolerance}); it was not written and "
            "what was there is unchanged."
        )
    return error
