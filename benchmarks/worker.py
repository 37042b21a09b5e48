"""One process of a benchmark interleaved across processes (processes.py
drives it): it prepares its measurements, runs their untimed calls, then
times one round each time it reads `round` on stdin.

    python benchmarks/worker.py '<JSON spec>'

The spec's kind:
An optional "matmul_shape" [m, k, n] replaces the (32 * 196, 768, 3072)
product of the matmul rate (tests use a small one).

- "keras": a keras_mixer model on the backend of this process
  (KERAS_BACKEND), the paths of `keras_mixer.benchmark.PATHS`, and the
  backend's matmul rate.
- "torch": a PyTorch model (timm's, or a function of a Python file such as
  the authors' reference code: "file:PATH:FUNCTION"), eager inference and
  training steps, and torch's matmul rate. This kind does not import Keras
  or keras_mixer: it loads keras_mixer/benchmark/timing.py and
  torch_models.py by their paths, so it also runs in an environment with
  only torch (and what the model file needs).

Protocol (one JSON object per line on stdout): first
{"ready": [measurement descriptions]}, then per `round`:
{"seconds": {name: seconds}, "cpu": CPU seconds of the round}.
"""

import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATMUL_SHAPE = (32 * 196, 768, 3072)


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _file_builder(text):
    """"file:PATH:FUNCTION" -> the function. The authors' CycleMLP and ViP
    files import `timm.models.layers.helpers`, which timm >= 0.9 moved to
    `timm.layers.helpers`: the old name is aliased to it (the only
    adaptation; the files are used unmodified)."""
    _, path, function = text.split(":")
    try:
        import timm.layers.helpers

        sys.modules.setdefault("timm.models.layers.helpers", timm.layers.helpers)
    except ImportError:
        pass
    sys.path.insert(0, os.path.dirname(path))
    module = _load(os.path.splitext(os.path.basename(path))[0], path)
    return getattr(module, function)


def keras_measurements(spec, timing):
    import keras

    from keras_mixer.benchmark import keras_paths
    from keras_mixer.benchmark import report
    from keras_mixer.models import _tools

    backend = keras.backend.backend()
    tag = spec["tag"]
    shape = spec.get("matmul_shape", MATMUL_SHAPE)
    found = []
    for precision in spec["precisions"]:
        found.append(keras_paths.matmul_measurement(
            f"{tag}:" + report.matmul_key(precision, tag),
            keras_paths.matmul_timers(precision, *shape, backend),
            *shape, matmul=True, precision=precision))
        if spec.get("model_kwargs"):  # e.g. the demo's small Mixer
            import keras_mixer

            with keras_paths.dtype_policy(precision):
                model = keras_mixer.MLPMixer(**spec["model_kwargs"])
        else:
            model = keras_paths.build(spec["model"], precision,
                                      spec["image_size"])
        spec.setdefault("flops_per_image", _tools.count_flops(model))
        for m in keras_paths.keras_measurements(
                model, spec["paths"], spec["batch_size"], spec["steps"],
                prefix=f"{tag}:{precision}/",
                jit_compile=spec.get("jit_compile")):
            m.info.update(precision=precision, library=tag,
                          matmul_name=f"{tag}:" + report.matmul_key(precision, tag),
                          framework=spec.get("label", m.info["framework"]))
            found.append(m)
    return found


def torch_measurements(spec, timing):
    torch_models = _load("keras_mixer_torch_models", os.path.join(
        ROOT, "keras_mixer", "benchmark", "torch_models.py"))
    import torch

    builder = spec["builder"]
    if builder.startswith("file:"):
        model = _file_builder(builder)()
    else:
        model = torch_models.timm_model(builder, spec["image_size"])
    torch.manual_seed(0)
    tag = spec["tag"]
    per_image = spec["flops_per_image"]
    shape = spec.get("matmul_shape", MATMUL_SHAPE)
    found = []
    for precision in spec["precisions"]:
        mm = torch_models.matmul_call(*shape, precision)
        found.append(timing.Measurement(
            f"{tag}:{precision}/matmul/{tag}",
            lambda mm=mm: timing.best_seconds(mm, 3, warmup=1),
            flops=2.0 * shape[0] * shape[1] * shape[2],
            self_timed=True, matmul=True, precision=precision))
        for mode in spec["modes"]:
            call, images = torch_models.model_call(
                model, precision, mode, spec["batch_size"], spec["image_size"],
                spec["steps"], compile=spec.get("compile", False))
            found.append(timing.Measurement(
                f"{tag}:{precision}/{mode}", call, images=images,
                flops=per_image * images * (3 if mode == "train" else 1),
                framework=spec["label"], precision=precision, mode=mode,
                library=tag, matmul_name=f"{tag}:{precision}/matmul/{tag}",
                path=f"torch_{mode}",
                written=("model(x) under torch.inference_mode()"
                         if mode == "infer" else "AdamW step")
                + (", torch.compile" if spec.get("compile") else ", eager")))
    return found


def main():
    spec = json.loads(sys.argv[1])
    # stdout carries the protocol only: what libraries and model files
    # print (at import too) goes to stderr.
    out = sys.stdout
    sys.stdout = sys.stderr
    if spec["kind"] == "keras":
        from keras_mixer.benchmark import timing

        measurements = keras_measurements(spec, timing)
    else:
        timing = _load("keras_mixer_timing", os.path.join(
            ROOT, "keras_mixer", "benchmark", "timing.py"))
        measurements = torch_measurements(spec, timing)
    for m in measurements:
        for _ in range(spec.get("warmup", 1)):
            m.call()
    described = [dict(name=m.name, images=m.images, flops=m.flops,
                      reference=bool(spec.get("reference")), **m.info)
                 for m in measurements]
    print(json.dumps({"ready": described, "spec": spec}), file=out, flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        cpu = os.times()
        seconds = {m.name: timing.time_call(m) for m in measurements}
        used = os.times()
        print(json.dumps({"seconds": seconds,
                          "cpu": used.user + used.system - cpu.user - cpu.system}),
              file=out, flush=True)


if __name__ == "__main__":
    main()
