import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent
version = {}
exec((HERE / "keras_mixer" / "version.py").read_text(), version)

setup(
    name="keras-mixer",
    version=version["__version__"],
    description="MLP-Mixer, ResMLP, gMLP, gMixer and ConvMixer for Keras 3 (TensorFlow, JAX, PyTorch).",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_mixer", "keras_mixer.*"]),
    package_data={
        "keras_mixer.labels": ["*.txt"],
        # scikit-learn's copy of the UCI handwritten digits (the demo's data).
        "keras_mixer": ["assets/*.gz", "assets/*.txt"],
    },
    install_requires=[
        # The default backend. The Linux wheel is CPU-ready; CUDA is opt-in.
        "tensorflow>=2.16",
        "keras>=3.6",
        "absl-py",
        "numpy",
        "h5py",
        # timm checkpoints (read as NumPy, no torch needed).
        "safetensors",
        # Training: datasets by name, and TensorBoard logs.
        "tensorflow-datasets",
        # tensorflow-datasets 4.9 imports it on every builder's download path
        # (DatasetBuilder.code_path) but declares it for Python < 3.9 only.
        "importlib_resources",
        "tensorboard",
        # Export: the LiteRT interpreter checks every TFLite file it writes.
        "ai-edge-litert",
    ],
    extras_require={
        # deit / timm .pth checkpoints, read with torch.load(weights_only=True).
        "torch": ["torch"],
        # weights="hf://..." (timm's models on the Hugging Face Hub); tested
        # with 2.4.0.
        "hub": ["huggingface_hub>=2.4"],
        # keras_mixer.export.to_onnx.
        "onnx": ["tf2onnx", "onnxruntime"],
        # export/grpc_client.py (TF Serving's gRPC API).
        "serving": ["tensorflow-serving-api", "grpcio"],
        # keras_mixer.visualize and the notebooks/ (run them in Jupyter).
        "notebooks": ["matplotlib", "ipykernel", "nbclient", "nbformat"],
        "test": [
            "pytest",
            # Encodes BMP/GIF/JPEG test images; the gRPC client's messages.
            "pillow",
            "tensorflow-serving-api",
            "grpcio",
            "tf2onnx",
            "onnxruntime",
            # The JAX backend is tested in a subprocess (CPU build).
            "jax[cpu]",
            # hf:// against a Hub stand-in on 127.0.0.1.
            "huggingface_hub>=2.4",
            # keras_mixer.visualize; every notebook is executed offline.
            "matplotlib",
            "ipykernel",
            "nbclient",
            "nbformat",
        ],
    },
    entry_points={"console_scripts": ["keras-mixer=keras_mixer.cli:run"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
