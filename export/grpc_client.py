#!/usr/bin/env python3
"""Queries a keras_mixer model on TF Serving's gRPC API and prints the top-5
labels of each image. Needs `pip install tensorflow-serving-api` (or
`pip install -e ".[serving]"`).

    python export/grpc_client.py --server localhost:8500 --model mixer_b16 cat.jpg
"""

import argparse
import sys


def build_request(paths, model, signature="image_bytes", version=None):
    """A PredictRequest with the encoded files as a DT_STRING [n] tensor."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    blobs = []
    for path in paths:
        with open(path, "rb") as f:
            blobs.append(f.read())
    request.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto(blobs, dtype=tf.string, shape=[len(blobs)]))
    return request


def predict(server, model, paths, version=None, timeout=60):
    """Sends the request; returns {output name: NumPy array}."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(build_request(paths, model, version=version),
                                timeout=timeout)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def format_top5(outputs):
    blocks = []
    for i in range(len(outputs["top_k_indices"])):
        indices = outputs["top_k_indices"][i]
        labels = (outputs["top_k_labels"][i] if "top_k_labels" in outputs
                  else [str(j).encode() for j in indices])
        lines = []
        for rank, (label, index, score) in enumerate(zip(
                labels, indices, outputs["top_k_scores"][i]), 1):
            lines.append(f"  {rank}. {label.decode()} ({index}): {score:.4f}")
        blocks.append(lines)
    return blocks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="localhost:8500")
    parser.add_argument("--model", default="mixer_b16")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    outputs = predict(args.server, args.model, args.images, args.version)
    for path, lines in zip(args.images, format_top5(outputs)):
        print(path)
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
