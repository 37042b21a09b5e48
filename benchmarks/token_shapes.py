"""The token-mixing matmuls of MixerB16 at batch 32 (rows = 32 x 768), on
their own: as now (rows of tokens), with the tokens padded from 196 to 208,
224 or 256, and in the column layout `W^T @ X` (tokens first), which would
need no transposes. "useful" counts only the 196 real tokens.

    python benchmarks/token_shapes.py
"""
import tensorflow as tf

from keras_mixer.benchmark.timing import best_seconds

ROWS, HIDDEN = 32 * 768, 384


for dt in (tf.bfloat16, tf.float32):
    for tokens in (196, 208, 224, 256):
        x = tf.cast(tf.random.normal((ROWS, tokens)), dt)
        w1 = tf.cast(tf.random.normal((tokens, HIDDEN)), dt)
        h = tf.cast(tf.random.normal((ROWS, HIDDEN)), dt)
        w2 = tf.cast(tf.random.normal((HIDDEN, tokens)), dt)
        cases = {
            "rows fc1": tf.function(lambda: tf.matmul(x, w1)),
            "rows fc2": tf.function(lambda: tf.matmul(h, w2)),
        }
        if tokens == 196:
            xt, ht = tf.transpose(x), tf.transpose(h)
            cases["cols fc1"] = tf.function(
                lambda: tf.matmul(w1, xt, transpose_a=True))
            cases["cols fc2"] = tf.function(
                lambda: tf.matmul(w2, ht, transpose_a=True))
        for name, f in cases.items():
            sec = best_seconds(lambda: f().numpy(), repeats=7, warmup=1)
            flop = 2 * ROWS * tokens * HIDDEN
            useful = 2 * ROWS * 196 * HIDDEN
            print(f"{dt.name:8s} tokens={tokens} {name}  {sec * 1e3:6.2f} ms  "
                  f"{flop / sec / 1e9:4.0f} GFLOP/s (useful {useful / sec / 1e9:4.0f})",
                  flush=True)
