#!/usr/bin/env bash
# Serves export/models/* with TF Serving in Docker: REST on 8501, gRPC on 8500.
# Export first, from the repository root:
#   keras-mixer export --model MixerB16 --weights imagenet1k --image_size 224 \
#       --output export/models/mixer_b16 --version 1
# Then query:
#   python export/rest_client.py --model mixer_b16 cat.jpg
#   python export/grpc_client.py --model mixer_b16 cat.jpg
set -euo pipefail
cd "$(dirname "$0")"
exec docker run --rm -t -p 8501:8501 -p 8500:8500 \
    -v "$PWD/models:/models" \
    -v "$PWD/models.config:/config/models.config:ro" \
    tensorflow/serving \
    --model_config_file=/config/models.config \
    --model_config_file_poll_wait_seconds=60
