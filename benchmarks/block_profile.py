"""Component profile of MixerB16 at 224, batch 32: the whole model, then
each sublayer of block_0 alone in a tf.function, best of a few calls.

    python benchmarks/block_profile.py float32
    python benchmarks/block_profile.py mixed_bfloat16
"""
import sys, numpy as np
import keras, tensorflow as tf, keras_mixer
from keras_mixer.benchmark.timing import best_seconds
if len(sys.argv) > 1: keras.config.set_dtype_policy(sys.argv[1])
m = keras_mixer.MixerB16(input_shape=(224,224,3))
x = tf.random.uniform((32,224,224,3), 0, 255)
def bench(f, name, n=3):
    best = best_seconds(f, repeats=n, warmup=1)
    print(f"{name:30s} {best*1e3:8.1f} ms  {32/best:5.2f} img/s", flush=True)
g = tf.function(lambda x: m(x, training=False))
bench(lambda: g(x).numpy(), "tf.function(model)")
xn = x.numpy()
bench(lambda: m.predict(xn, batch_size=32, verbose=0), "predict")
# pieces
stem = keras.Model(m.input, m.get_layer("stem").output)
s = stem(x)
blk = m.get_layer("block_0")
gb = tf.function(lambda s: blk(s, training=False))
bench(lambda: gb(s).numpy(), "one block x12", n=5)
n1 = blk.norm1
gn = tf.function(lambda s: n1(s))
bench(lambda: gn(s).numpy(), "layernorm", n=5)
tmix = blk.token_mixing
gt = tf.function(lambda s: tf.transpose(
    tmix(tf.transpose(s, (0, 2, 1)), training=False), (0, 2, 1)))
bench(lambda: gt(s).numpy(), "token mlp (with its transposes)", n=5)
cmix = blk.channel_mixing
gc = tf.function(lambda s: cmix(s, training=False))
bench(lambda: gc(s).numpy(), "channel mlp", n=5)
gs = tf.function(lambda x: stem(x))
bench(lambda: gs(x).numpy(), "stem", n=5)
