"""Export for serving (TensorFlow backend; the models never import it).

    serving.py  SavedModel for TF Serving (`save_for_serving`), the
                `image_bytes` decoding, and `load_predictor` behind
                `keras-mixer predict`
    tflite.py   `to_tflite` with builtin ops only, `run_tflite`,
                `ops_outside_delegate` (what XNNPACK leaves out)
    onnx.py     `to_onnx` (tf2onnx, checked with onnxruntime)

Every export is written to a temporary name beside its destination, checked
(the SavedModel reloaded and compared with Keras; TFLite and ONNX files run
against Keras), and only then renamed into place, with the modes of `cp -r`;
a failed check leaves the previous file or version untouched. Models with
NaN or Inf weights are refused before any work.
"""

from keras_mixer.export.onnx import to_onnx  # noqa: F401
from keras_mixer.export.serving import SAVED_MODEL_TOLERANCE  # noqa: F401
from keras_mixer.export.serving import SIGNATURES  # noqa: F401
from keras_mixer.export.serving import decode_and_resize  # noqa: F401
from keras_mixer.export.serving import decode_batch  # noqa: F401
from keras_mixer.export.serving import default_labels  # noqa: F401
from keras_mixer.export.serving import load_predictor  # noqa: F401
from keras_mixer.export.serving import resolve_labels  # noqa: F401
from keras_mixer.export.serving import save_for_serving  # noqa: F401
from keras_mixer.export.tflite import QUANTIZATIONS  # noqa: F401
from keras_mixer.export.tflite import TFLITE_TOLERANCE  # noqa: F401
from keras_mixer.export.tflite import check_builtin_ops  # noqa: F401
from keras_mixer.export.tflite import ops_outside_delegate  # noqa: F401
from keras_mixer.export.tflite import run_tflite  # noqa: F401
from keras_mixer.export.tflite import tflite_latency_ms  # noqa: F401
from keras_mixer.export.tflite import tflite_ops  # noqa: F401
from keras_mixer.export.tflite import to_tflite  # noqa: F401
