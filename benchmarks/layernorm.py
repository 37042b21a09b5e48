"""LayerNorm of (32, 196, 768): Keras, moments, by hand, fused batch norm;
then by hand with float32 statistics, the same inside a nested XLA function,
and last the two layers: Keras's LayerNormalization and keras_mixer's LayerNorm.

    python benchmarks/layernorm.py        # float32
    python benchmarks/layernorm.py bf16
"""
import sys
import tensorflow as tf, keras
from keras_mixer.benchmark.timing import best_seconds
B,T,C = 32,196,768
dt = tf.bfloat16 if (len(sys.argv)>1 and sys.argv[1]=="bf16") else tf.float32
x = tf.cast(tf.random.normal((B,T,C)), dt)
g = tf.ones(C, dt); b = tf.zeros(C, dt)
ln = keras.layers.LayerNormalization(epsilon=1e-6, dtype="mixed_bfloat16" if dt==tf.bfloat16 else "float32"); ln.build((B,T,C))
def keras_ln(x): return ln(x)
def moments(x):
    m, v = tf.nn.moments(x, axes=[-1], keepdims=True)
    return tf.nn.batch_normalization(x, m, v, b, g, 1e-6)
def manual(x):
    m = tf.reduce_mean(x, -1, keepdims=True)
    d = x - m
    v = tf.reduce_mean(tf.square(d), -1, keepdims=True)
    return d * tf.math.rsqrt(v + 1e-6) * g + b
def fused_bn(x):
    x2 = tf.reshape(tf.cast(x, tf.float32), (1, B*T, C, 1))
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(x2, tf.ones(B*T), tf.zeros(B*T), epsilon=1e-6, data_format="NCHW")
    y = tf.reshape(y, (B,T,C))
    return tf.cast(y * tf.cast(g, tf.float32) + tf.cast(b, tf.float32), dt)
for f in (keras_ln, moments, manual, fused_bn):
    h = tf.function(f)
    best = best_seconds(lambda: h(x).numpy(), repeats=9, warmup=1)
    print(f"{dt.name} {f.__name__:10s} {best*1e3:6.2f} ms")
import numpy as np
print(np.abs(tf.function(keras_ln)(x).numpy().astype('float32') - tf.function(fused_bn)(x).numpy().astype('float32')).max())
def manual32(x):
    x32 = tf.cast(x, tf.float32)
    m = tf.reduce_mean(x32, -1, keepdims=True)
    d = x32 - m
    v = tf.reduce_mean(tf.square(d), -1, keepdims=True)
    return tf.cast(d * tf.math.rsqrt(v + 1e-6) * tf.cast(g, tf.float32) + tf.cast(b, tf.float32), dt)
xla = tf.function(manual32, jit_compile=True)
def nested(x): return xla(x)
for f in (keras_ln, manual32, nested):
    h = tf.function(f)
    best = best_seconds(lambda: h(x).numpy(), repeats=9, warmup=1)
    print(f"again {dt.name} {f.__name__:10s} {best*1e3:6.2f} ms")
# The layers themselves: Keras's LayerNormalization against
# keras_mixer.layers.LayerNorm (the manual32 form in keras.ops), same policy.
from keras_mixer.layers import LayerNorm
policy = "mixed_bfloat16" if dt == tf.bfloat16 else "float32"
for cls in (keras.layers.LayerNormalization, LayerNorm):
    layer = cls(epsilon=1e-6, dtype=policy); layer.build((B, T, C))
    h = tf.function(lambda x: layer(x))
    best = best_seconds(lambda: h(x).numpy(), repeats=9, warmup=1)
    print(f"layer {dt.name} {cls.__name__:20s} {best*1e3:6.2f} ms")
