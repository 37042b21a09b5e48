"""Export for serving: SavedModel for TF Serving, TFLite, ONNX, and the
loaders behind `keras-mixer predict` (TensorFlow backend)."""

from keras_mixer.export.serving import QUANTIZATIONS  # noqa: F401
from keras_mixer.export.serving import SAVED_MODEL_TOLERANCE  # noqa: F401
from keras_mixer.export.serving import SIGNATURES  # noqa: F401
from keras_mixer.export.serving import TFLITE_TOLERANCE  # noqa: F401
from keras_mixer.export.serving import check_builtin_ops  # noqa: F401
from keras_mixer.export.serving import decode_and_resize  # noqa: F401
from keras_mixer.export.serving import decode_batch  # noqa: F401
from keras_mixer.export.serving import default_labels  # noqa: F401
from keras_mixer.export.serving import load_predictor  # noqa: F401
from keras_mixer.export.serving import resolve_labels  # noqa: F401
from keras_mixer.export.serving import run_tflite  # noqa: F401
from keras_mixer.export.serving import save_for_serving  # noqa: F401
from keras_mixer.export.serving import tflite_latency_ms  # noqa: F401
from keras_mixer.export.serving import tflite_ops  # noqa: F401
from keras_mixer.export.serving import to_onnx  # noqa: F401
from keras_mixer.export.serving import to_tflite  # noqa: F401
