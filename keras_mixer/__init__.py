"""keras_mixer: MLP-Mixer and ResMLP for Keras 3.

>>> import keras_mixer
>>> model = keras_mixer.MixerB16()  # doctest: +SKIP
"""

from keras_mixer import layers
from keras_mixer import mixer
from keras_mixer import resmlp
from keras_mixer import visualize
from keras_mixer.common import count_flops
from keras_mixer.common import feature_extractor
from keras_mixer.common import preprocess_input
from keras_mixer.labels import decode_predictions
from keras_mixer.mixer import MLPMixer
from keras_mixer.mixer import MixerB16
from keras_mixer.mixer import MixerB32
from keras_mixer.mixer import MixerH14
from keras_mixer.mixer import MixerL16
from keras_mixer.mixer import MixerL32
from keras_mixer.mixer import MixerS8
from keras_mixer.mixer import MixerS16
from keras_mixer.mixer import MixerS32
from keras_mixer.resmlp import ResMLP
from keras_mixer.resmlp import ResMLP12
from keras_mixer.resmlp import ResMLP24
from keras_mixer.resmlp import ResMLP36
from keras_mixer.resmlp import ResMLPB24
from keras_mixer.resize import resize_token_mixing
from keras_mixer.version import __version__
from keras_mixer.weights import WEIGHTS
from keras_mixer.weights import list_weights

# Every named variant: {"MixerB16": keras_mixer.MixerB16, ...}.
MODELS = {**mixer.VARIANTS, **resmlp.VARIANTS}
