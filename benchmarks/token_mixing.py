"""Times three exact formulations of the token-mixing dense layer.

Mixer-B/16 shapes: x (32, 196, 768), kernel (196, 384), TensorFlow, with and
without XLA. keras_mixer's blocks use swap_dense_swap (a transpose around
a 2-D matmul).

    python benchmarks/token_mixing.py
"""

import time

import numpy as np
import tensorflow as tf

x = tf.random.normal((32, 196, 768))
k = tf.random.normal((196, 384))


def swap_dense_swap(x):
    return tf.transpose(tf.matmul(tf.transpose(x, (0, 2, 1)), k), (0, 2, 1))


def broadcast_matmul(x):
    return tf.matmul(tf.transpose(k), x)


def einsum(x):
    return tf.einsum("btc,ts->bsc", x, k)


if __name__ == "__main__":
    reference = swap_dense_swap(x)
    for f in (swap_dense_swap, broadcast_matmul, einsum):
        np.testing.assert_allclose(f(x), reference, rtol=1e-4, atol=1e-3)
        for jit in (False, True):
            g = tf.function(f, jit_compile=jit)
            g(x)
            start = time.perf_counter()
            for _ in range(10):
                g(x).numpy()
            ms = (time.perf_counter() - start) / 10 * 1e3
            print(f"{f.__name__:18s} jit_compile={jit!s:5s} {ms:7.1f} ms")
