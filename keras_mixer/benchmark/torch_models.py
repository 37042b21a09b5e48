"""PyTorch models timed the way users run them: eager calls, inference under
`torch.inference_mode()`, a training step with AdamW on cross-entropy; and
timm's model of a keras_mixer variant when timm imports.

Nothing here imports Keras or the rest of keras_mixer, and torch is imported
only inside the functions, so that a benchmark worker in an environment
without Keras (the authors' reference code of CycleMLP and ViP) can load this
file by its path. This module never installs anything: where timm does not
import as it is (torchvision missing), there are no timm rows;
`benchmarks/throughput.py` installs a stand-in for torchvision first.
"""

import contextlib
import sys

# Same learning rate and weight decay in both frameworks (Keras's AdamW
# defaults; torch's AdamW default decay is 0.01).
ADAMW = dict(learning_rate=1e-3, weight_decay=0.004)

# keras_mixer name -> timm model name (the same architecture). timm's
# ConvMixer takes no img_size (it is fully convolutional).
TIMM_NAMES = {
    "MixerS32": "mixer_s32_224",
    "MixerS16": "mixer_s16_224",
    "MixerB32": "mixer_b32_224",
    "MixerB16": "mixer_b16_224",
    "MixerL32": "mixer_l32_224",
    "MixerL16": "mixer_l16_224",
    "ResMLP12": "resmlp_12_224",
    "ResMLP24": "resmlp_24_224",
    "ResMLP36": "resmlp_36_224",
    "ResMLPB24": "resmlp_big_24_224",
    "GMLPTi16": "gmlp_ti16_224",
    "GMLPS16": "gmlp_s16_224",
    "GMLPB16": "gmlp_b16_224",
    "GMixer12": "gmixer_12_224",
    "GMixer24": "gmixer_24_224",
    "ConvMixer1536_20": "convmixer_1536_20",
    "ConvMixer768_32": "convmixer_768_32",
    "ConvMixer1024_20": "convmixer_1024_20_ks9_p14",
}


def timm_model(model_name, image_size=224):
    """timm's model of the same architecture as `model_name`, random
    weights, on the CPU. Raises ValueError for a variant timm does not have,
    ImportError when timm does not import."""
    if model_name not in TIMM_NAMES:
        raise ValueError(f"timm has no model for {model_name!r}; timm rows "
                         f"exist for {', '.join(TIMM_NAMES)}.")
    import timm

    name = TIMM_NAMES[model_name]
    kwargs = {} if name.startswith("convmixer") else {"img_size": image_size}
    return timm.create_model(name, pretrained=False, **kwargs)


def describe():
    """torch's version and threads, and timm's version when imported."""
    import torch

    timm = sys.modules.get("timm")
    return dict(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                timm=getattr(timm, "__version__", None))


def model_call(model, precision="float32", mode="infer", batch_size=32,
               image_size=224, steps=1, seed=0, compile=False):
    """A callable running `steps` batches of `model` (an `nn.Module` taking
    NCHW float images and returning logits), and the images it processes.

    infer: `model(x)` under `torch.inference_mode()` per batch, in eval mode.
    train: per batch, cross-entropy on random labels, `backward()` and an
    AdamW step (`ADAMW`), in train mode. Each call sets the mode, so that an
    inference and a training callable can share one model. bfloat16: `torch.autocast` of the
    model's device type around the forward pass (and the loss), as timm's
    own benchmark does. `compile=True` wraps the model in `torch.compile`.
    On a GPU each call waits for the device before returning.
    """
    import torch

    device = next(model.parameters()).device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if precision == "bfloat16" else contextlib.nullcontext())
    generator = torch.Generator().manual_seed(seed)
    n = steps * batch_size
    x = torch.randn(n, 3, image_size, image_size, generator=generator).to(device)
    classes = getattr(model, "num_classes", 1000)
    y = torch.randint(0, classes, (n,), generator=generator).to(device)
    forward = torch.compile(model) if compile else model

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if mode == "infer":
        def call():
            model.eval()
            with torch.inference_mode(), autocast:
                for i in range(steps):
                    forward(x[i * batch_size:(i + 1) * batch_size])
            sync()
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=ADAMW["learning_rate"],
            weight_decay=ADAMW["weight_decay"])

        def call():
            model.train()
            for i in range(steps):
                batch = slice(i * batch_size, (i + 1) * batch_size)
                with autocast:
                    loss = torch.nn.functional.cross_entropy(
                        forward(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            sync()

    return call, n


def matmul_call(m, k, n, dtype="float32"):
    """A callable running one (m, k) x (k, n) matmul of `dtype` in torch
    (eager, on the GPU when there is one)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(device, getattr(torch, dtype))
    b = torch.randn(k, n, generator=generator).to(device, getattr(torch, dtype))

    def call():
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    return call
