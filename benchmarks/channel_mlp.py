"""B/16 channel MLP at batch 32 (matmuls alone, 3-D Dense path, 2-D with
AddV2, 2-D with BiasAdd, tensordot), both GELU forms, float32.

    python benchmarks/channel_mlp.py
"""
import sys
import tensorflow as tf
from keras_mixer.benchmark.timing import best_seconds
B,T,C,H = 32,196,768,3072
x = tf.random.normal((B,T,C))
w1 = tf.Variable(tf.random.normal((C,H))*0.02); b1 = tf.Variable(tf.zeros(H))
w2 = tf.Variable(tf.random.normal((H,C))*0.02); b2 = tf.Variable(tf.zeros(C))
approx = True
def v3d(x):
    h = tf.matmul(x, w1) + b1
    h = tf.nn.gelu(h, approximate=approx)
    return tf.matmul(h, w2) + b2
def v2d_add(x):
    x2 = tf.reshape(x, (-1, C))
    h = tf.matmul(x2, w1) + b1
    h = tf.nn.gelu(h, approximate=approx)
    return tf.reshape(tf.matmul(h, w2) + b2, (B,T,C))
def v2d_biasadd(x):
    x2 = tf.reshape(x, (-1, C))
    h = tf.nn.bias_add(tf.matmul(x2, w1), b1)
    h = tf.nn.gelu(h, approximate=approx)
    return tf.reshape(tf.nn.bias_add(tf.matmul(h, w2), b2), (B,T,C))
def mm_only(x):
    x2 = tf.reshape(x, (-1, C))
    return tf.matmul(tf.matmul(x2, w1), w2)
def tensordot(x):
    h = tf.tensordot(x, w1, 1) + b1
    h = tf.nn.gelu(h, approximate=approx)
    return tf.tensordot(h, w2, 1) + b2
dtype = sys.argv[1] if len(sys.argv)>1 else "float32"
for a in (True, False):
  approx = a
  for f in (mm_only, v3d, v2d_add, v2d_biasadd, tensordot):
    g = tf.function(f)
    best = best_seconds(lambda: g(x).numpy(), repeats=5, warmup=2)
    fl = 2*2*B*T*C*H
    print(f"approx={a} {f.__name__:12s} {best*1e3:7.1f} ms {fl/best/1e9:6.1f} GFLOP/s")
