"""One (6272, 768) x (768, 3072) matmul in float32 and bfloat16, TensorFlow
with and without XLA (jit_compile), best of 5.

    python benchmarks/matmul_xla.py
"""
import tensorflow as tf
from keras_mixer.benchmark.timing import best_seconds
def rate(dtype, jit, m=6272,k=768,n=3072, reps=5):
    a = tf.cast(tf.random.normal((m,k)), dtype); b = tf.cast(tf.random.normal((k,n)), dtype)
    f = tf.function(lambda a,b: tf.matmul(a,b), jit_compile=jit)
    best = best_seconds(lambda: f(a,b).numpy(), repeats=reps, warmup=1)
    return 2*m*k*n/best/1e9
for d in ("float32","bfloat16"):
    for j in (False, True):
        print(d, j, round(rate(d,j),1))
