"""B/16 token MLP at batch 32: matmuls alone, the broadcast form, and
transpose -> 2-D matmul + BiasAdd -> transpose.

    python benchmarks/token_mlp.py        # float32
    python benchmarks/token_mlp.py bf16
"""
import sys
import tensorflow as tf
from keras_mixer.benchmark.timing import best_seconds
B,T,C,S = 32,196,768,384
dt = tf.bfloat16 if (len(sys.argv)>1 and sys.argv[1]=="bf16") else tf.float32
x = tf.cast(tf.random.normal((B,T,C)), dt)
k1 = tf.cast(tf.random.normal((T,S))*0.02, dt); b1 = tf.zeros(S, dt)
k2 = tf.cast(tf.random.normal((S,T))*0.02, dt); b2 = tf.zeros(T, dt)
def current(x):
    h = tf.matmul(tf.transpose(k1), x) + b1[:, None]
    h = tf.nn.gelu(h, approximate=True)
    return tf.matmul(tf.transpose(k2), h) + b2[:, None]
def transposed2d(x):
    xt = tf.reshape(tf.transpose(x, (0,2,1)), (-1, T))
    h = tf.nn.gelu(tf.nn.bias_add(tf.matmul(xt, k1), b1), approximate=True)
    y = tf.nn.bias_add(tf.matmul(h, k2), b2)
    return tf.transpose(tf.reshape(y, (B, C, T)), (0,2,1))
def mm_only(x):
    return tf.matmul(tf.transpose(k2), tf.matmul(tf.transpose(k1), x))
for f in (mm_only, current, transposed2d):
    g = tf.function(f)
    best = best_seconds(lambda: g(x).numpy(), repeats=7, warmup=2)
    fl = 2*2*B*T*C*S
    print(f"{dt.name} {f.__name__:12s} {best*1e3:7.1f} ms {fl/best/1e9:6.1f} GFLOP/s")
