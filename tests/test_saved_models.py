"""Saved models still load, in a fresh process, and give the logits they gave
when saved (tests/data/): a Mixer and a ResMLP saved by an earlier layout of
the package, a CycleMLP and a Vision Permutator saved when they were added
(tests/test_pyramid.py loads these two on JAX and PyTorch)."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
ROOT = os.path.dirname(os.path.dirname(DATA))
CASES = ("mixer", "resmlp", "cyclemlp", "vip")

# Run in a new interpreter, which knows nothing but `import keras_mixer`:
# the saved class names must resolve through keras_mixer's registrations.
_LOAD = r"""
import json, os, sys
import keras, numpy as np
import keras_mixer

data, names = sys.argv[1], sys.argv[2:]
out = {}
for name in names:
    prefix = os.path.join(data, name)
    images = np.load(prefix + ".input.npy", allow_pickle=False)
    with open(prefix + ".json") as f:
        spec = json.load(f)
    builder = getattr(keras_mixer, spec["builder"])
    whole = keras.models.load_model(prefix + ".keras", safe_mode=True)
    rebuilt = builder(**spec["kwargs"])
    rebuilt.load_weights(prefix + ".weights.h5")
    through_weights = builder(weights=prefix + ".weights.h5", **spec["kwargs"])
    out[name] = {
        kind: keras.ops.convert_to_numpy(model(images, training=False)).tolist()
        for kind, model in (("keras", whole), ("load_weights", rebuilt),
                            ("weights_argument", through_weights))
    }
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded():
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               PYTHONPATH=os.pathsep.join(
                   [ROOT, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, DATA, *CASES],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT")]
    return json.loads(line[-1][len("RESULT"):])


@pytest.mark.parametrize("kind", ["keras", "load_weights", "weights_argument"])
@pytest.mark.parametrize("name", CASES)
def test_saved_model_gives_its_saved_logits(loaded, name, kind):
    expected = np.load(os.path.join(DATA, f"{name}.logits.npy"),
                       allow_pickle=False)
    assert np.max(np.abs(expected)) > 0.5  # the head is not zero
    got = np.asarray(loaded[name][kind], np.float32)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_saved_models_use_the_block_classes():
    """The files hold the registered blocks, so the test above exercises
    their deserialization (not a config that happens to avoid them)."""
    for name, block in (("mixer", "MixerBlock"), ("resmlp", "ResMLPBlock"),
                        ("cyclemlp", "CycleBlock"), ("vip", "PermutatorBlock")):
        with open(os.path.join(DATA, f"{name}.json")) as f:
            assert json.load(f)["kwargs"]["drop_path_rate"] > 0
        with zipfile.ZipFile(os.path.join(DATA, f"{name}.keras")) as archive:
            config = archive.read("config.json").decode()
        assert f'"registered_name": "keras_mixer>{block}"' in config
