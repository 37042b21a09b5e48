"""The published weights of every named variant: a table, data only.

`WEIGHTS` maps each variant (`"MixerB16"`) to its weights names
(`"imagenet1k"`), each with where the file is published and how the model
must be built and fed to reproduce it. `keras_mixer.checkpoints.download`
fetches the files; the variants' `weights=` takes the names.
"""

_GOOGLE = "https://storage.googleapis.com/mixer_models"
_TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download"
_DEIT = "https://dl.fbaipublicfiles.com/deit"
_HF = "https://huggingface.co"
_APACHE = "Apache-2.0"


def _google(collection, size, patch, classes, description):
    return dict(
        url=f"{_GOOGLE}/{collection}/Mixer-{size}_{patch}.npz",
        filename=f"mixer_{collection}_Mixer-{size}_{patch}.npz",
        format="flax_npz",
        source="Google (official Flax MLP-Mixer, google-research/vision_transformer)",
        license=_APACHE,
        classes=classes,
        resolution=224,
        preprocessing="tf",
        approximate_gelu=True,
        sha256=None,
        description=description,
    )


def _timm_mixer(tag, release_file, classes, preprocessing, description):
    return dict(
        url=f"{_TIMM}/{release_file}",
        filename=release_file.split("/")[-1],
        format="torch",
        source=f"timm ({tag}; also hf.co/timm/{tag} as model.safetensors)",
        license=_APACHE,
        classes=classes,
        resolution=224,
        preprocessing=preprocessing,
        approximate_gelu=False,
        sha256=None,
        description=description,
        hf_hub_id=f"timm/{tag}",
    )


def _timm_hub(tag, preprocessing, mean, std, crop_pct, license, description,
              release_file=None):
    """A timm weights set of the Hub (`timm/<tag>`): timm's GitHub release
    `.pth` where one exists (its name carries a hash prefix), else the Hub's
    `model.safetensors`. mean/std, crop_pct and interpolation are timm's
    `pretrained_cfg` (eval: resize the short side to 224 / crop_pct,
    bicubic, center crop 224)."""
    url = f"{_TIMM}/{release_file}" if release_file else (
        f"{_HF}/timm/{tag}/resolve/main/model.safetensors")
    return dict(
        url=url,
        filename=release_file.split("/")[-1] if release_file else f"timm_{tag}.safetensors",
        format="torch" if release_file else "safetensors",
        source=f"timm ({tag}; hf.co/timm/{tag})",
        license=license,
        classes=1000,
        resolution=224,
        preprocessing=preprocessing,
        approximate_gelu=False,
        sha256=None,
        description=description,
        hf_hub_id=f"timm/{tag}",
        mean=mean,
        std=std,
        crop_pct=crop_pct,
        interpolation="bicubic",
    )


_HALF = (0.5, 0.5, 0.5)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_RA3 = "ImageNet-1k, timm's RandAugment recipe (Wightman)."
_CONVMIXER = (
    "ImageNet-1k, the paper's weights (Trockman & Kolter), first published at "
    "github.com/tmp-iclr/convmixer/releases/download/timm-v1.0/{}."
)


def _deit(file, classes, description):
    return dict(
        url=f"{_DEIT}/{file}",
        filename=file,
        format="torch",
        source="Facebook (deit, ResMLP paper)",
        license=_APACHE,
        classes=classes,
        resolution=224,
        preprocessing="torch",
        approximate_gelu=False,
        sha256=None,
        description=description,
    )


_GSAM = "Trained on ImageNet-1k with the GSAM optimizer (Zhuang et al., 2022)."
_SAM = "Trained on ImageNet-1k with the SAM optimizer (Chen et al., 2021)."
_I1K = (
    "Official paper checkpoint of the gs://mixer_models/imagenet1k collection, "
    "ImageNet-1k classifier (the collection is described as trained on "
    "ImageNet; timm labels its conversion in21k_ft_in1k, see timm PR #651)."
)
_I21K = "Official paper checkpoint pre-trained on ImageNet-21k (21,843 classes)."
_GOOG_FT = (
    "Google's Mixer weights converted by timm (jx_ release file); timm tags "
    "them ImageNet-21k pre-trained, ImageNet-1k fine-tuned."
)
_MIIL = (
    "Alibaba-MIIL ImageNet-21K-P pre-training (Ridnik et al., 2021), timm "
    "release; inputs in [0, 1] without mean/std."
)

# {variant: {weights name: entry}}. Entries: url, filename (cache name),
# format, source, license, classes, resolution, preprocessing (a mode of
# keras_mixer.preprocess_input), approximate_gelu (the source's GELU), sha256
# (None where the publisher gives none; a hash prefix in a file name such as
# timm's `-76587d61.pth` is verified), description. Hub entries also have
# hf_hub_id (what weights="hf://<id>" fetches), and timm's mean, std,
# crop_pct and interpolation; the pyramid families crop_pct, interpolation
# and (ViP) page.
WEIGHTS = {
    "MixerS8": {"gsam": _google("gsam", "S", 8, 1000, _GSAM)},
    "MixerS16": {"gsam": _google("gsam", "S", 16, 1000, _GSAM)},
    "MixerS32": {"gsam": _google("gsam", "S", 32, 1000, _GSAM)},
    "MixerB32": {
        "sam": _google("sam", "B", 32, 1000, _SAM),
        "gsam": _google("gsam", "B", 32, 1000, _GSAM),
    },
    "MixerB16": {
        "imagenet1k": _google("imagenet1k", "B", 16, 1000, _I1K),
        "imagenet21k": _google("imagenet21k", "B", 16, 21843, _I21K),
        "sam": _google("sam", "B", 16, 1000, _SAM),
        "gsam": _google("gsam", "B", 16, 1000, _GSAM),
        "goog_in21k_ft_in1k": _timm_mixer(
            "mixer_b16_224.goog_in21k_ft_in1k",
            "v0.1-vitjx/jx_mixer_b16_224-76587d61.pth",
            1000, "tf", _GOOG_FT,
        ),
        "goog_in21k": _timm_mixer(
            "mixer_b16_224.goog_in21k",
            "v0.1-vitjx/jx_mixer_b16_224_in21k-617b3de2.pth",
            21843, "tf", "Google's ImageNet-21k Mixer weights converted by timm.",
        ),
        "miil_in21k_ft_in1k": _timm_mixer(
            "mixer_b16_224.miil_in21k_ft_in1k",
            "v0.1-tresnet/mixer_b16_224_miil-9229a591.pth",
            1000, "zero_one", _MIIL + " Fine-tuned on ImageNet-1k.",
        ),
        "miil_in21k": _timm_mixer(
            "mixer_b16_224.miil_in21k",
            "v0.1-tresnet/mixer_b16_224_miil_in21k-2a558a71.pth",
            11221, "zero_one", _MIIL + " ImageNet-21K-P head (11,221 classes).",
        ),
    },
    "MixerL16": {
        "imagenet1k": _google("imagenet1k", "L", 16, 1000, _I1K),
        "imagenet21k": _google("imagenet21k", "L", 16, 21843, _I21K),
        "goog_in21k_ft_in1k": _timm_mixer(
            "mixer_l16_224.goog_in21k_ft_in1k",
            "v0.1-vitjx/jx_mixer_l16_224-92f9adc4.pth",
            1000, "tf", _GOOG_FT,
        ),
        "goog_in21k": _timm_mixer(
            "mixer_l16_224.goog_in21k",
            "v0.1-vitjx/jx_mixer_l16_224_in21k-846aa33c.pth",
            21843, "tf", "Google's ImageNet-21k Mixer weights converted by timm.",
        ),
    },
}
WEIGHTS.update({
    "GMLPS16": {"ra3_in1k": _timm_hub(
        "gmlp_s16_224.ra3_in1k", "tf", _HALF, _HALF, 0.875, _APACHE, _RA3,
        "v0.1-weights/gmlp_s16_224_raa-10536d42.pth")},
    "GMixer24": {"ra3_in1k": _timm_hub(
        "gmixer_24_224.ra3_in1k", "torch", _IMAGENET_MEAN, _IMAGENET_STD,
        0.875, _APACHE, _RA3, "v0.1-weights/gmixer_24_224_raa-7daf7ae6.pth")},
    **{
        f"ConvMixer{size}": {"in1k": _timm_hub(
            f"convmixer_{tag}.in1k", "torch", _IMAGENET_MEAN, _IMAGENET_STD,
            0.96, "MIT", _CONVMIXER.format(original))}
        for size, tag, original in (
            ("1536_20", "1536_20", "convmixer_1536_20_ks9_p7.pth.tar"),
            ("768_32", "768_32", "convmixer_768_32_ks7_p7_relu.pth.tar"),
            ("1024_20", "1024_20_ks9_p14", "convmixer_1024_20_ks9_p14.pth.tar"),
        )
    },
})
for _depth, _prefix in (("12", "resmlp_12"), ("24", "resmlp_24"), ("36", "resmlp_36"), ("B24", "resmlpB_24")):
    WEIGHTS[f"ResMLP{_depth}"] = {
        "imagenet1k": _deit(f"{_prefix}_no_dist.pth", 1000, "ImageNet-1k, no distillation (ResMLP paper)."),
        "imagenet1k_distilled": _deit(f"{_prefix}_dist.pth", 1000, "ImageNet-1k with DeiT-style distillation from a RegNetY-16GF teacher."),
    }
WEIGHTS["ResMLPB24"]["imagenet22k_ft_in1k"] = _deit(
    "resmlpB_24_22k.pth", 1000, "Pre-trained on ImageNet-22k, fine-tuned on ImageNet-1k."
)
for _depth in ("12", "24"):
    WEIGHTS[f"ResMLP{_depth}"]["dino"] = _deit(
        f"resmlp_{_depth}_dino.pth", 1000,
        "Self-supervised with DINO, no fine-tuning: a backbone for features "
        "or fine-tuning; its head, if present, is not a trained classifier.",
    )


# CycleMLP and Vision Permutator: the authors' files. Their entries add the
# evaluation crop of the published accuracies: `crop_pct` (resize the
# shorter side to resolution / crop_pct, then centre-crop) and
# `interpolation`; `page` is where a person downloads a file by hand.
_CYCLEMLP_TOP1 = {"B1": 78.9, "B2": 81.6, "B3": 82.4, "B4": 83.0, "B5": 83.2}
for _key, _top1 in _CYCLEMLP_TOP1.items():
    WEIGHTS[f"CycleMLP{_key}"] = {
        "imagenet1k": dict(
            url=(
                "https://github.com/ShoufaChen/CycleMLP/releases/download/"
                f"v0.1/CycleMLP_{_key}.pth"
            ),
            filename=f"CycleMLP_{_key}.pth",
            format="torch",
            source="official CycleMLP (github.com/ShoufaChen/CycleMLP, release v0.1)",
            license="MIT",
            classes=1000,
            resolution=224,
            preprocessing="torch",
            approximate_gelu=False,
            sha256=None,
            # main.py --eval: Resize(256, bicubic) + CenterCrop(224); the
            # default_cfgs of cycle_mlp.py (unused there) say 0.9 for B1-B3.
            crop_pct=0.875,
            interpolation="bicubic",
            description=(
                f"ImageNet-1k, {_top1}% top-1 in the authors' README. The "
                "file holds {'model': state_dict} with the Cycle FC offset "
                "buffers, which are checked and dropped."
            ),
        )
    }

_VIP_DRIVE = {
    "S7": ("1cX6eauDrsGsLSZnqsX7cl0oiKX8Dzv5z", 81.5, 0.9),
    "M7": ("15y5WMypthpbBFdc01E3mJCZit7q0Yn8m", 82.7, 0.9),
    "L7": ("14F5IXGXmB_3jrwK33Efae-WEb5D_G85c", 83.2, 0.875),
}
for _key, (_drive_id, _top1, _crop) in _VIP_DRIVE.items():
    WEIGHTS[f"ViP{_key}"] = {
        "imagenet1k": dict(
            url=(
                "https://drive.google.com/uc?export=download&confirm=t&id="
                + _drive_id
            ),
            page=f"https://drive.google.com/file/d/{_drive_id}/view",
            filename=f"vip_{_key.lower()}.pth",
            format="torch",
            source=(
                "official Vision Permutator (github.com/Andrew-Qibin/"
                "VisionPermutator, Google Drive)"
            ),
            license=(
                "MIT (LICENSE); the authors' README adds: code for "
                "non-commercial use only"
            ),
            classes=1000,
            resolution=224,
            preprocessing="torch",
            approximate_gelu=False,
            sha256=None,
            # timm's eval transform with the default_cfgs of models/vip.py.
            crop_pct=_crop,
            interpolation="bicubic",
            description=(
                f"ImageNet-1k, {_top1}% top-1 in the authors' README. Google "
                "Drive may answer with a confirmation page instead of the "
                "file: download it by hand from `page` then."
            ),
        )
    }


def list_weights(model_name=None, file=None):
    """Prints the weights table (all variants, or one) and returns it.

    Example:
    >>> table = keras_mixer.list_weights("MixerS32")  # doctest: +ELLIPSIS
    MixerS32
      gsam: ...
    """
    names = [model_name] if model_name else sorted(WEIGHTS)
    for name in names:
        if name not in WEIGHTS:
            raise ValueError(
                f"No pretrained weights are published for {name!r}. Models "
                f"with weights: {', '.join(sorted(WEIGHTS))}."
            )
        print(name, file=file)
        for key, entry in WEIGHTS[name].items():
            print(
                f"  {key}: {entry['classes']} classes, {entry['resolution']}px, "
                f"{entry['format']}, preprocessing={entry['preprocessing']}, "
                f"{'tanh' if entry['approximate_gelu'] else 'exact'} GELU, "
                f"{entry['license']}\n    {entry['url']}\n    "
                + (f"hf://{entry['hf_hub_id']}\n    " if "hf_hub_id" in entry else "")
                + f"{entry['description']}",
                file=file,
            )
    return {n: WEIGHTS[n] for n in names}
