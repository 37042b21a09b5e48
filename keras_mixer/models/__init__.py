"""Every named variant, by name: `MODELS = {"MixerB16": MixerB16, ...}`.

One module per family (`mixer` (with gMixer), `resmlp`, `gmlp`,
`convmixer`, `cyclemlp`, `vip`), each with its blocks, its builder,
`MODEL_CONFIGS` and `VARIANTS`; `_builder` holds what they share.
"""

from keras_mixer.models import convmixer
from keras_mixer.models import cyclemlp
from keras_mixer.models import gmlp
from keras_mixer.models import mixer
from keras_mixer.models import resmlp
from keras_mixer.models import vip

MODELS = {
    **mixer.VARIANTS, **resmlp.VARIANTS, **gmlp.VARIANTS, **convmixer.VARIANTS,
    **cyclemlp.VARIANTS, **vip.VARIANTS,
}


def get(name, also=()):
    """The constructor of the variant `name`.

    Args:
        name: a key of `MODELS`.
        also: other names the caller accepts (listed first in the error).

    Raises:
        ValueError: `name` is not a variant; the message lists the choices.
    """
    if name not in MODELS:
        choices = ", ".join([*also, *MODELS])
        raise ValueError(f"Unknown model {name!r}. Choose one of: {choices}.")
    return MODELS[name]
