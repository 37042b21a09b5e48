#!/usr/bin/env python3
"""Queries a keras_mixer model on TF Serving's REST API and prints the top-5
labels of each image. Standard library only.

    python export/rest_client.py --server http://localhost:8501 \
        --model mixer_b16 cat.jpg dog.png

It sends the encoded files to the `image_bytes` signature (TF Serving's
REST API takes binary inputs as {"b64": ...} under a name ending in
"_bytes"); the model decodes and resizes them itself.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request


def build_request(paths, signature="image_bytes"):
    """The JSON body of a :predict request in TF Serving's row format."""
    instances = []
    for path in paths:
        with open(path, "rb") as f:
            encoded = base64.b64encode(f.read()).decode("ascii")
        instances.append({"image_bytes": {"b64": encoded}})
    return {"signature_name": signature, "instances": instances}


def predict_url(server, model, version=None):
    url = f"{server.rstrip('/')}/v1/models/{model}"
    if version is not None:
        url += f"/versions/{version}"
    return url + ":predict"


def predict(server, model, paths, version=None, timeout=60):
    """POSTs the request; returns TF Serving's `predictions` (one dict per
    image: probabilities, top_k_indices, top_k_scores, top_k_labels)."""
    body = json.dumps(build_request(paths)).encode("utf-8")
    request = urllib.request.Request(
        predict_url(server, model, version), data=body,
        headers={"Content-Type": "application/json"}, method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        raise SystemExit(f"TF Serving refused the request ({error.code}): {detail}")


def format_top5(path, prediction):
    labels = prediction.get("top_k_labels") or [
        str(i) for i in prediction["top_k_indices"]]
    lines = [path]
    for rank, (label, index, score) in enumerate(zip(
            labels, prediction["top_k_indices"], prediction["top_k_scores"]), 1):
        lines.append(f"  {rank}. {label} ({index}): {score:.4f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://localhost:8501")
    parser.add_argument("--model", default="mixer_b16")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    for path, prediction in zip(args.images, predict(
            args.server, args.model, args.images, args.version)):
        print(format_top5(path, prediction))
    return 0


if __name__ == "__main__":
    sys.exit(main())
