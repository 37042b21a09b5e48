"""model.predict of MixerB16 over NumPy arrays against a tf.data.Dataset,
and the fixed cost of one predict call in mixed_bfloat16.

    python benchmarks/predict_inputs.py
"""
import time, numpy as np, keras, tensorflow as tf, keras_mixer
m = keras_mixer.MixerB16(input_shape=(224,224,3))
x = (np.random.default_rng(0).random((160,224,224,3), dtype=np.float32)*255)
def t(f, name):
    f(); s=time.perf_counter(); f(); d=time.perf_counter()-s
    print(f"{name:28s} {d:6.2f} s", flush=True)
t(lambda: m.predict(x[:32], batch_size=32, verbose=0), "predict 32 (1 batch)")
t(lambda: m.predict(x[:64], batch_size=32, verbose=0), "predict 64 (2 batches)")
t(lambda: m.predict(x, batch_size=32, verbose=0), "predict 160 (5 batches)")
t(lambda: [m.predict(x[i:i+32], batch_size=32, verbose=0) for i in range(0,160,32)], "5 x predict 32")
t(lambda: [m.predict_on_batch(x[i:i+32]) for i in range(0,160,32)], "5 x predict_on_batch")

ds = tf.data.Dataset.from_tensor_slices(x).batch(32)
t(lambda: m.predict(ds, verbose=0), "dataset 160 (5 batches)")

# mixed_bfloat16: one batch through predict vs predict_on_batch
keras.config.set_dtype_policy("mixed_bfloat16")
m = keras_mixer.MixerB16(input_shape=(224,224,3))
ds1 = tf.data.Dataset.from_tensor_slices(x[:32]).batch(32)
t(lambda: m.predict(ds1, verbose=0), "bf16 predict(dataset) 1 batch")
t(lambda: m.predict_on_batch(x[:32]), "bf16 predict_on_batch")
