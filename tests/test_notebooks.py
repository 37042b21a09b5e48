"""Every notebook in notebooks/ runs top to bottom offline, so none goes stale.

Each one is executed with nbclient in a fresh kernel (this interpreter, so
the installed keras_mixer), in a temporary working directory, with
KERAS_MIXER_OFFLINE=1: the notebooks then swap in the bundled digits, small
models and no downloads. The notebooks are stored without outputs, and each
starts with a papermill-style `parameters` cell.
"""

import json
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))

# Files each notebook must leave in its working directory (OUTPUT_DIR is
# "outputs" in every parameters cell).
ARTIFACTS = {
    "01_quickstart.ipynb": [
        "outputs/Mixer-tiny_8_random.npz",
        "outputs/quickstart_top5.png",
    ],
    "02_finetune.ipynb": [
        "outputs/finetune_history.png",
        "outputs/finetuned.keras",
    ],
    "03_visualize.ipynb": [
        "outputs/token_mixing_block0.png",
        "outputs/token_mixing_block2.png",
        "outputs/stem_mixer_digits.png",
        "outputs/cross_patch_block0.png",
        "outputs/cross_patch_block2.png",
        "outputs/sparsity_mixer_digits.png",
        "outputs/sparsity_resmlp_digits.png",
    ],
    "04_export_and_serve.ipynb": [
        "outputs/models/mixer_digits/1/saved_model.pb",
        "outputs/models/mixer_digits/1/variables",
        "outputs/mixer_digits_none.tflite",
        "outputs/mixer_digits_dynamic_int8.tflite",
        "outputs/mixer_digits.keras",
        "outputs/request.json",
    ],
    "05_permutation.ipynb": [
        "outputs/permuted_examples.png",
        "outputs/permutation_accuracy.png",
    ],
}


def _read(path):
    return nbformat.read(str(path), as_version=4)


def _code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_notebooks_exist():
    names = {path.name for path in PATHS}
    assert set(ARTIFACTS) <= names, sorted(set(ARTIFACTS) - names)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_stored_clean_with_a_parameters_cell(path):
    notebook = _read(path)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    cells = _code_cells(notebook)
    assert cells, f"{path.name} has no code cell"
    first = cells[0]
    assert "parameters" in first.metadata.get("tags", []), (
        f"{path.name}: the first code cell must be tagged 'parameters'"
    )
    assert "KERAS_MIXER_OFFLINE" in first.source
    for i, cell in enumerate(cells):
        assert not cell.outputs and cell.execution_count is None, (
            f"{path.name}: code cell {i} has stored outputs; clear them "
            "(jupyter nbconvert --clear-output --inplace)"
        )


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """The environment the kernel inherits, and a `python3` kernel spec that
    runs this interpreter whatever else is installed."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("KERAS_MIXER_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    # The kernel's Keras files (keras.json, caches) stay out of the home folder.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_runs_offline(path, kernel_env):
    notebook = _read(path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(kernel_env)}},
        shutdown_kernel="immediate",  # a graceful TensorFlow exit costs seconds
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        output for cell in _code_cells(notebook) for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, errors
    missing = [
        name for name in ARTIFACTS.get(path.name, [])
        if not (kernel_env / name).exists()
    ]
    assert not missing, f"{path.name} did not write {missing}"
