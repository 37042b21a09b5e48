"""Peak memory of decoding a PNG bomb (23000x23000 black pixels in 1.5 MB,
1.59 GB once decoded) through each way images enter keras_mixer: the
SavedModel's `image_bytes` signature, `keras-mixer predict`'s decoding (a
.keras model) and an image-folder dataset; and (`folder_cache`) the growth of
a cached folder dataset of 27 photos of 2500x2500 read for two epochs at
224 px.

Each path runs in a fresh process: it is warmed up on small images first
(so TensorFlow's one-time allocations count as idle), then its peak RSS is
reset and the bomb goes through. A watchdog kills a process past --cap_gb.

    python benchmarks/decode_memory.py              # all three paths
    python benchmarks/decode_memory.py --side 9000  # another bomb size
    python benchmarks/decode_memory.py --paths folder_cache
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ("image_bytes", "predict", "folder", "folder_cache")


def _status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(path, side, folder):
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import bombs
    import keras_mixer
    from keras_mixer import export
    from keras_mixer.training import data

    small = tf.io.encode_png(np.full((40, 50, 3), 90, np.uint8)).numpy()
    bomb = bombs.png_bomb(side)
    model = keras_mixer.MLPMixer(4, 16, 1, 8, 32, input_shape=(32, 32, 3),
                                 classes=2)
    for name, content in (("warm/a/1.png", small), ("warm/a/2.png", small),
                          ("warm/b/1.png", small), ("warm/b/2.png", small),
                          ("bomb/a/1.png", small), ("bomb/a/2.png", small),
                          ("bomb/a/bomb.png", bomb), ("bomb/b/1.png", small),
                          ("bomb/b/2.png", small), ("small.png", small),
                          ("bomb.png", bomb)):
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)

    if path == "image_bytes":
        served = export.save_for_serving(model, os.path.join(folder, "m"),
                                         top_k=1)
        signature = tf.saved_model.load(served).signatures["image_bytes"]

        def run(blob):
            return signature(image_bytes=tf.constant([blob]))

        warm, go = (lambda: run(small)), (lambda: run(bomb))
    elif path == "predict":
        model.save(os.path.join(folder, "m.keras"))
        predictor = export.load_predictor(os.path.join(folder, "m.keras"))
        warm = lambda: predictor([os.path.join(folder, "small.png")])  # noqa
        go = lambda: predictor([os.path.join(folder, "bomb.png")])  # noqa
    elif path == "folder_cache":
        rng = np.random.default_rng(0)
        ramp = np.linspace(0, 255, 2500, dtype=np.float32)
        for i in range(27):
            image = (ramp[:, None, None] * 0.5 + ramp[None, :, None] * 0.3
                     + rng.normal(0, 20, (1, 2500, 3)) + i)
            blob = tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8))
            name = os.path.join(folder, "photos", f"c{i % 3}", f"{i}.jpg")
            os.makedirs(os.path.dirname(name), exist_ok=True)
            with open(name, "wb") as f:
                f.write(blob.numpy())

        def epochs(root, size):
            ds, _ = data.build_dataset(f"folder:{root}", "train",
                                       image_size=size, batch_size=4,
                                       training=True, cache=True)
            for _ in range(2):
                for _ in ds.take(6):
                    pass
            return "ran two epochs"

        warm = lambda: epochs(os.path.join(folder, "warm"), 32)  # noqa
        go = lambda: epochs(os.path.join(folder, "photos"), 224)  # noqa
    else:
        def read(root):
            ds, info = data.build_dataset(f"folder:{root}", "train",
                                          image_size=32, batch_size=1,
                                          training=True, cache=True)
            for _ in ds.take(8):
                pass
            return f"ran; skipped_files={info.skipped_files}"

        warm = lambda: read(os.path.join(folder, "warm"))  # noqa
        go = lambda: read(os.path.join(folder, "bomb"))  # noqa
    warm()
    idle = _status("self", "VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS
    start = time.time()
    try:
        result = go()
        outcome = result if isinstance(result, str) else "decoded"
    except Exception as error:  # noqa: BLE001 - report any refusal
        lines = getattr(error, "message", str(error)).strip().splitlines()
        line = next((x for x in lines if "pixels" in x), lines[-1])
        outcome = f"{type(error).__name__}: {line.strip()[:150]}"
    peak = _status("self", "VmHWM")
    print(json.dumps({"path": path, "idle": idle, "peak": peak,
                      "seconds": round(time.time() - start, 2),
                      "outcome": outcome}), flush=True)


def measure(path, side, cap):
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", path, "--side", str(side),
             "--folder", folder],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                 "PYTHONPATH": ROOT + os.pathsep + os.environ.get(
                     "PYTHONPATH", "")})
        seen = [0]

        def watch():
            while proc.poll() is None:
                try:
                    seen[0] = max(seen[0], _status(proc.pid, "VmRSS"))
                except (OSError, ValueError):
                    return
                if seen[0] > cap:
                    proc.kill()
                    return
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        out, err = proc.communicate()
        watcher.join()
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {"path": path, "idle": None, "peak": seen[0], "outcome":
            f"killed past the {cap / 2**30:.0f} GiB cap" if seen[0] > cap
            else f"exit {proc.returncode}: {err.strip()[-200:]}"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--folder")
    parser.add_argument("--side", type=int, default=23000)
    parser.add_argument("--cap_gb", type=float, default=6.0)
    parser.add_argument("--paths", default=",".join(PATHS))
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.side, args.folder)
    print(f"| path | idle RSS | peak RSS | over idle | time | outcome |\n"
          f"|---|---|---|---|---|---|")
    for path in args.paths.split(","):
        r = measure(path, args.side, args.cap_gb * 2**30)
        over = (f"{(r['peak'] - r['idle']) / 2**20:,.0f} MiB"
                if r["idle"] else f"> {args.cap_gb:.0f} GiB")
        idle = f"{r['idle'] / 2**20:,.0f} MiB" if r["idle"] else "?"
        print(f"| {path} | {idle} | {r['peak'] / 2**20:,.0f} MiB | {over} | "
              f"{r.get('seconds', '?')} s | {r['outcome']} |", flush=True)


if __name__ == "__main__":
    main()
