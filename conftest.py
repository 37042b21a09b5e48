import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_mixer  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--run_large",
        action="store_true",
        default=False,
        help="also run tests marked large (full-size forward passes)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run_large"):
        return
    skip = pytest.mark.skip(reason="large test: run with --run_large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def reference():
    """tests/reference.py (the NumPy float64 forward passes and `rel_err`),
    loaded by path under a private name, independent of sys.path."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests",
                        "reference.py")
    spec = importlib.util.spec_from_file_location(
        "_keras_mixer_tests_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def constant_initializers(monkeypatch):
    """Keras's random initialisers return zeros while the test runs: for
    tests that build full-size models only to count their parameters or
    FLOPs, which do not depend on the values (the random draws take most of
    the time of such a build)."""
    from keras.src.initializers import random_initializers as initializers

    def zeros(self, shape, dtype=None):
        return keras.ops.zeros(shape, dtype=dtype)

    for name in ("RandomNormal", "TruncatedNormal", "RandomUniform",
                 "VarianceScaling"):
        monkeypatch.setattr(getattr(initializers, name), "__call__", zeros)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace.update(np=np, keras=keras, keras_mixer=keras_mixer)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts with float32, channels_last and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")


@pytest.fixture
def cli_usage_error():
    """Runs `keras-mixer ARGS...` in this process (parsed as the console
    script parses them) and returns the `app.UsageError` it must raise: for
    checks that fail before any work, without a new interpreter."""
    from absl import app

    from keras_mixer import cli

    def run(*args):
        with pytest.raises(app.UsageError) as error:
            cli.main(["keras-mixer", *args])
        return str(error.value)

    return run
