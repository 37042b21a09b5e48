"""keras_mixer: MLP-Mixer, ResMLP, CycleMLP and Vision Permutator for Keras 3.

>>> import keras_mixer
>>> model = keras_mixer.MixerB16()  # doctest: +SKIP
"""

from keras_mixer import layers
from keras_mixer import models
from keras_mixer import visualize
from keras_mixer.labels import decode_predictions
from keras_mixer.models import MODELS
from keras_mixer.models._builder import preprocess_input
from keras_mixer.models._tools import count_flops
from keras_mixer.models._tools import feature_extractor
from keras_mixer.models._tools import resize_token_mixing
from keras_mixer.models.mixer import MLPMixer
from keras_mixer.models.mixer import MixerB16
from keras_mixer.models.mixer import MixerB32
from keras_mixer.models.mixer import MixerH14
from keras_mixer.models.mixer import MixerL16
from keras_mixer.models.mixer import MixerL32
from keras_mixer.models.mixer import MixerS8
from keras_mixer.models.mixer import MixerS16
from keras_mixer.models.mixer import MixerS32
from keras_mixer.models.resmlp import ResMLP
from keras_mixer.models.resmlp import ResMLP12
from keras_mixer.models.resmlp import ResMLP24
from keras_mixer.models.resmlp import ResMLP36
from keras_mixer.models.resmlp import ResMLPB24
from keras_mixer.models.cyclemlp import CycleMLP
from keras_mixer.models.cyclemlp import CycleMLPB1
from keras_mixer.models.cyclemlp import CycleMLPB2
from keras_mixer.models.cyclemlp import CycleMLPB3
from keras_mixer.models.cyclemlp import CycleMLPB4
from keras_mixer.models.cyclemlp import CycleMLPB5
from keras_mixer.models.vip import VisionPermutator
from keras_mixer.models.vip import ViPL7
from keras_mixer.models.vip import ViPM7
from keras_mixer.models.vip import ViPS7
from keras_mixer.models.vip import ViPS14
from keras_mixer.presets import WEIGHTS
from keras_mixer.presets import list_weights
from keras_mixer.version import __version__
