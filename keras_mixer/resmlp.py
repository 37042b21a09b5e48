"""ResMLP (Touvron et al., 2021, https://arxiv.org/abs/2105.03404).

The Mixer skeleton with a single linear layer across patches, the Affine
transform `alpha * x + beta` in place of LayerNorm, LayerScale on both residual
branches and GELU only in the channel MLP. `MODEL_CONFIGS` follows deit's
`resmlp_models.py`.
"""

from keras_mixer import common
from keras_mixer import layers as mixer_layers

MODEL_CONFIGS = {
    "12": dict(patch_size=16, hidden_dim=384, num_blocks=12, layerscale_init=0.1),
    "24": dict(patch_size=16, hidden_dim=384, num_blocks=24, layerscale_init=1e-5),
    "36": dict(patch_size=16, hidden_dim=384, num_blocks=36, layerscale_init=1e-6),
    "B24": dict(patch_size=8, hidden_dim=768, num_blocks=24, layerscale_init=1e-6),
}


def default_layerscale_init(num_blocks):
    """LayerScale initial value by depth, as in the ResMLP paper: 0.1 up to
    18 blocks, 1e-5 up to 24, 1e-6 beyond (ResMLP-B24 also uses 1e-6)."""
    if num_blocks <= 18:
        return 0.1
    if num_blocks <= 24:
        return 1e-5
    return 1e-6


def ResMLP(
    patch_size,
    hidden_dim,
    num_blocks,
    mlp_ratio=4,
    layerscale_init=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    dropout_rate=0.0,
    drop_path_rate=0.0,
    name="resmlp",
    approximate_gelu=None,
    head_dropout_rate=0.0,
    preprocessing=None,
):
    """Builds a ResMLP of any size.

    Layer names: `preprocessing`, `stem`, `block_0` ... `block_{N-1}` (each
    with `norm1`, `cross_patch`, `ls1`, `norm2`, `channel_mixing`, `ls2`),
    `pre_head_norm` (an Affine), `avg_pool`, `head`, `predictions`.

    Args:
        patch_size: side of the square patches.
        hidden_dim: channels of each token.
        num_blocks: number of residual blocks.
        mlp_ratio: hidden width of the channel MLP, as a multiple of
            `hidden_dim`.
        layerscale_init: initial LayerScale value; None picks it by depth
            (see `default_layerscale_init`).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: as in `keras_mixer.ResMLP12`.
        approximate_gelu: False uses the exact GELU, as deit; None (default)
            takes the form of the `weights`' source, else False.
        head_dropout_rate: dropout before the head (include_top only).
        preprocessing: input normalisation of `include_preprocessing`:
            "torch" (ImageNet mean/std, default), "tf" or "zero_one".

    Returns:
        A `keras.Model`.

    Example:
    >>> model = keras_mixer.ResMLP(
    ...     patch_size=4, hidden_dim=32, num_blocks=2,
    ...     input_shape=(16, 16, 3), classes=10)
    >>> model.get_layer("block_0").ls1.init_value
    0.1
    """
    for arg in ("patch_size", "hidden_dim", "num_blocks"):
        common._check_positive_int(arg, locals()[arg])
    common.check_head_arguments(
        include_top, pooling, classes, classifier_activation
    )
    common.resolve_input_shape(input_tensor, input_shape, patch_size, 224)
    checkpoint = common.read_weights(weights)
    if approximate_gelu is None:
        approximate_gelu = getattr(checkpoint, "approximate_gelu", False)
    if layerscale_init is None:
        layerscale_init = default_layerscale_init(num_blocks)
    rates = common.stochastic_depth_rates(drop_path_rate, num_blocks)

    def trunk(x):
        for i, rate in enumerate(rates):
            x = mixer_layers.ResMLPBlock(
                layerscale_init,
                mlp_ratio=mlp_ratio,
                approximate_gelu=approximate_gelu,
                dropout_rate=dropout_rate,
                drop_path_rate=rate,
                name=f"block_{i}",
            )(x)
        return x

    return common.build_model(
        trunk=trunk,
        pre_head_norm=mixer_layers.Affine(name="pre_head_norm"),
        patch_size=patch_size,
        hidden_dim=hidden_dim,
        include_top=include_top,
        weights=checkpoint,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        include_preprocessing=include_preprocessing,
        preprocessing=preprocessing or "torch",
        head_dropout_rate=head_dropout_rate,
        default_size=224,
        name=name,
    )


def _variant(key):
    config = MODEL_CONFIGS[key]
    return common.make_variant(
        ResMLP,
        config,
        f"ResMLP{key}",
        f"resmlp_{key.lower()}",
        dict(
            title=f"ResMLP-{key}",
            family="ResMLP",
            paper="Touvron et al. (2021)",
            description=(
                "{num_blocks} residual blocks of width {hidden_dim} on "
                "{patch_size}x{patch_size} patches, channel MLP ratio 4, "
                "LayerScale initialised to {layerscale_init:g}, exact GELU."
            ).format(**config),
            reference="https://arxiv.org/abs/2105.03404",
            default_size=224,
            preprocessing="torch",
            preprocessing_text="ImageNet mean and std, as deit",
            example_size=2 * config["patch_size"],
        ),
    )


ResMLP12 = _variant("12")
ResMLP24 = _variant("24")
ResMLP36 = _variant("36")
ResMLPB24 = _variant("B24")

VARIANTS = {f.__name__: f for f in (ResMLP12, ResMLP24, ResMLP36, ResMLPB24)}
