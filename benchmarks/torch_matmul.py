"""Why the PyTorch backend runs B/16 at about half TensorFlow's speed here:
PyTorch's float32 matmul goes through MKL's sgemm, which on this AMD CPU
runs at about half the rate of the oneDNN kernels that TensorFlow uses, and
that PyTorch itself ships and uses for other dtypes.

    python benchmarks/torch_matmul.py --rounds 5

The same product (B/16's channel MLP at batch 32: 6272 x 768 by 768 x 3072,
plus the bias) in one process, interleaved rounds, best of 3 per round:
- `torch.nn.functional.linear` (what `keras.ops.matmul` and timm's
  `nn.Linear` run on the CPU: MKL sgemm);
- `torch._C._nn.mkldnn_linear` on oneDNN tensors (PyTorch's own oneDNN);
- `tf.matmul` + bias in a `tf.function` (TensorFlow's oneDNN).
Also under MKL_DEBUG_CPU_TYPE=5 and MKL_ENABLE_INSTRUCTIONS=AVX512 (set by
the caller: MKL reads them at load), the two documented MKL switches.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))

ROWS, INNER, COLUMNS = 6272, 768, 3072


def measurements():
    import tensorflow as tf
    import torch

    from keras_mixer.benchmark import timing

    torch.set_num_threads(os.cpu_count())
    x = torch.randn(ROWS, INNER)
    w = torch.randn(COLUMNS, INNER)
    b = torch.randn(COLUMNS)
    x_onednn, w_onednn = x.to_mkldnn(), w.to_mkldnn()
    tx, tw, tb = (tf.constant(t.numpy()) for t in (x, w.T.contiguous(), b))
    product = tf.function(lambda: tf.nn.bias_add(tf.matmul(tx, tw), tb))
    # The three agree (a check that each computes the same product).
    reference = torch.nn.functional.linear(x, w, b)
    for other in (torch._C._nn.mkldnn_linear(x_onednn, w_onednn, b).to_dense(),
                  torch.from_numpy(product().numpy())):
        assert torch.allclose(reference, other, rtol=1e-3, atol=1e-2)

    def best(call):
        return lambda: timing.best_seconds(call, repeats=3, warmup=1)

    flops = 2 * ROWS * INNER * COLUMNS
    return [
        timing.Measurement("torch F.linear (MKL sgemm)", best(
            lambda: torch.nn.functional.linear(x, w, b)), flops=flops,
            self_timed=True),
        timing.Measurement("torch mkldnn_linear (oneDNN)", best(
            lambda: torch._C._nn.mkldnn_linear(x_onednn, w_onednn, b)),
            flops=flops, self_timed=True),
        timing.Measurement("tf.matmul + bias_add (oneDNN)", best(
            lambda: product().numpy()), flops=flops, self_timed=True),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from keras_mixer.benchmark import timing

    found = measurements()
    times = timing.interleave(found, args.rounds)
    env = {k: os.environ[k] for k in ("MKL_DEBUG_CPU_TYPE",
                                       "MKL_ENABLE_INSTRUCTIONS")
           if k in os.environ}
    print(f"{ROWS}x{INNER} by {INNER}x{COLUMNS} float32, {os.cpu_count()} "
          f"threads, {args.rounds} rounds; environment {env or 'default'}")
    base = found[0]
    for m in found:
        rate = timing.spread([r / 1e9 for r in timing.rates(times[m.name],
                                                             m.flops)])
        ratio = timing.spread(timing.ratios(times[m.name], times[base.name],
                                            m.flops, base.flops))
        print(f"  {m.name:<32}{rate['median']:7.1f} GFLOP/s "
              f"({rate['low']:.1f}-{rate['high']:.1f}), "
              f"{ratio['median']:.2f}x MKL ({ratio['low']:.2f}-"
              f"{ratio['high']:.2f})")


if __name__ == "__main__":
    main()
