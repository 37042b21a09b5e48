"""keras_mixer: all-MLP vision models for Keras 3 (MLP-Mixer, ResMLP, gMLP,
gMixer, ConvMixer, CycleMLP, Vision Permutator).

`import keras_mixer` loads the models, their layers and everything a saved
`.keras` file of this package refers to (layers, the learning-rate schedule),
so `keras.saving.load_model` finds them in a new process. The other public
submodules (`keras_mixer.export`, `.train`, `.data`, ...) load on first use:
TensorFlow is imported only when one of them needs it, never by
`import keras_mixer` under the JAX or PyTorch backend.

>>> import keras_mixer
>>> model = keras_mixer.MixerB16()  # doctest: +SKIP
"""

import importlib

from keras_mixer import tf_logs

tf_logs.default_level()
with tf_logs.quiet_startup():
    import keras  # TensorFlow, under its backend, loads here too
del keras

from keras_mixer import layers  # noqa: E402
# Imported eagerly: the model families register their blocks, which saved
# models name (keras_mixer>MixerBlock, ...).
from keras_mixer import models  # noqa: E402
# Registers the learning-rate schedule that trained models' optimizers save
# (keras_mixer>WarmupDecay); Keras only, no TensorFlow.
from keras_mixer.training import recipes  # noqa: E402
from keras_mixer.labels import decode_predictions  # noqa: E402
from keras_mixer.models import MODELS  # noqa: E402
from keras_mixer.models._builder import preprocess_input  # noqa: E402
from keras_mixer.models._tools import count_flops  # noqa: E402
from keras_mixer.models._tools import feature_extractor  # noqa: E402
from keras_mixer.models._tools import resize_token_mixing  # noqa: E402
from keras_mixer.models.convmixer import ConvMixer  # noqa: E402
from keras_mixer.models.convmixer import ConvMixer768_32  # noqa: E402
from keras_mixer.models.convmixer import ConvMixer1024_20  # noqa: E402
from keras_mixer.models.convmixer import ConvMixer1536_20  # noqa: E402
from keras_mixer.models.cyclemlp import CycleMLP  # noqa: E402
from keras_mixer.models.cyclemlp import CycleMLPB1  # noqa: E402
from keras_mixer.models.cyclemlp import CycleMLPB2  # noqa: E402
from keras_mixer.models.cyclemlp import CycleMLPB3  # noqa: E402
from keras_mixer.models.cyclemlp import CycleMLPB4  # noqa: E402
from keras_mixer.models.cyclemlp import CycleMLPB5  # noqa: E402
from keras_mixer.models.gmlp import GMLP  # noqa: E402
from keras_mixer.models.gmlp import GMLPB16  # noqa: E402
from keras_mixer.models.gmlp import GMLPS16  # noqa: E402
from keras_mixer.models.gmlp import GMLPTi16  # noqa: E402
from keras_mixer.models.mixer import GMixer12  # noqa: E402
from keras_mixer.models.mixer import GMixer24  # noqa: E402
from keras_mixer.models.mixer import MLPMixer  # noqa: E402
from keras_mixer.models.mixer import MixerB16  # noqa: E402
from keras_mixer.models.mixer import MixerB32  # noqa: E402
from keras_mixer.models.mixer import MixerH14  # noqa: E402
from keras_mixer.models.mixer import MixerL16  # noqa: E402
from keras_mixer.models.mixer import MixerL32  # noqa: E402
from keras_mixer.models.mixer import MixerS8  # noqa: E402
from keras_mixer.models.mixer import MixerS16  # noqa: E402
from keras_mixer.models.mixer import MixerS32  # noqa: E402
from keras_mixer.models.resmlp import ResMLP  # noqa: E402
from keras_mixer.models.resmlp import ResMLP12  # noqa: E402
from keras_mixer.models.resmlp import ResMLP24  # noqa: E402
from keras_mixer.models.resmlp import ResMLP36  # noqa: E402
from keras_mixer.models.resmlp import ResMLPB24  # noqa: E402
from keras_mixer.models.vip import VisionPermutator  # noqa: E402
from keras_mixer.models.vip import ViPL7  # noqa: E402
from keras_mixer.models.vip import ViPM7  # noqa: E402
from keras_mixer.models.vip import ViPS7  # noqa: E402
from keras_mixer.models.vip import ViPS14  # noqa: E402
from keras_mixer.presets import WEIGHTS  # noqa: E402
from keras_mixer.presets import list_weights  # noqa: E402
from keras_mixer.version import __version__  # noqa: E402

# Public submodules loaded on first attribute access: name -> module. The
# short names of the training modules (`keras_mixer.train`, `.data`, ...)
# stay public: the README, the notebooks and users' code call them.
LAZY_SUBMODULES = {
    "benchmark": "keras_mixer.benchmark",
    "checkpoints": "keras_mixer.checkpoints",
    "data": "keras_mixer.training.data",
    "distribute": "keras_mixer.training.distribute",
    "evaluation": "keras_mixer.training.evaluation",
    "export": "keras_mixer.export",
    "images": "keras_mixer.images",
    "presets": "keras_mixer.presets",
    "train": "keras_mixer.training.train",
    "visualize": "keras_mixer.visualize",
}


def __getattr__(name):
    if name in LAZY_SUBMODULES:
        with tf_logs.quiet_startup():  # some of them import TensorFlow
            module = importlib.import_module(LAZY_SUBMODULES[name])
        globals()[name] = module  # later lookups skip this hook
        return module
    raise AttributeError(f"module 'keras_mixer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(LAZY_SUBMODULES))
