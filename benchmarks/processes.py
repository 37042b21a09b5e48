"""A benchmark interleaved across processes: one worker per framework
(benchmarks/worker.py: the TensorFlow, JAX and PyTorch backends of Keras, or
the authors' PyTorch code in its own environment), and rounds that go
through the workers in turn (A B C A B C ...), so that the machine's drift
hits all of them alike. Only one worker computes at a time; the others wait
on their stdin.

The rows and the Markdown come from keras_mixer.benchmark.report, as for
the one-process benchmark; one worker's rows are the reference the others'
ratios are taken against, path by path where both have the path.
benchmarks/backends.py and benchmarks/families.py call `run`.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Worker:
    def __init__(self, spec, python=None, env=None):
        self.spec = spec
        environment = dict(os.environ, **(env or {}))
        environment["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep)
                      if p])
        self.process = subprocess.Popen(
            [python or sys.executable, os.path.join(HERE, "worker.py"),
             json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=environment)

    def _ended(self):
        status = self.process.wait()
        hint = (" (killed: SIGKILL, most often the kernel's out-of-memory "
                "killer; run fewer workers or a smaller batch)"
                if status == -9 else "")
        return RuntimeError(f"worker {self.spec['tag']} ended: exit status "
                            f"{status}{hint}; its stderr is above.")

    def read(self):
        line = self.process.stdout.readline()
        if not line:
            raise self._ended()
        return json.loads(line)

    def round(self):
        try:
            self.process.stdin.write("round\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._ended() from None
        return self.read()

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
            except BrokenPipeError:
                pass
            self.process.wait()


class _Described:
    """A measurement as a worker described it (what the report reads)."""

    def __init__(self, d):
        self.name, self.images, self.flops = d.pop("name"), d.pop("images"), \
            d.pop("flops")
        self.info = d


def run(workers, rounds, model_name, batch_size, image_size, command,
        warmup=1):
    """Starts the workers (one after the other: each prepares and warms up
    alone), times `rounds` rounds through them, and returns (rows, machine)
    for keras_mixer.benchmark.format_markdown. A worker spec without
    flops_per_image gets the first keras worker's."""
    from keras_mixer import benchmark
    from keras_mixer.benchmark import report
    from keras_mixer.benchmark import timing

    started, described = [], []
    try:
        flops = None
        for spec, python, env in workers:
            spec = dict(spec, warmup=warmup)
            if "flops_per_image" not in spec and flops is not None:
                spec["flops_per_image"] = flops
            worker = Worker(spec, python, env)
            started.append(worker)
            ready = worker.read()
            flops = flops or ready["spec"].get("flops_per_image")
            described += [_Described(d) for d in ready["ready"]]
            print(f"{spec['tag']} ready", file=sys.stderr, flush=True)
        load = timing.MachineLoad().start()
        for warning in load.warnings():
            print(f"busy machine: {warning}", file=sys.stderr, flush=True)
        times = {m.name: [] for m in described}
        for index in range(rounds):
            for worker in started:
                result = worker.round()
                load.add_own(result["cpu"])
                for name, seconds in result["seconds"].items():
                    times[name].append(seconds)
            print(f"round {index + 1}/{rounds} done", file=sys.stderr,
                  flush=True)
        load.stop()
    finally:
        for worker in started:
            worker.close()
    rows, matmul = report.rows_from_times(described, times, model_name,
                                          batch_size, image_size)
    machine = benchmark.machine_description()
    machine.update(matmul_shape=tuple(workers[0][0].get("matmul_shape", (32 * 196, 768, 3072))),
                   matmul_gflop_per_s=matmul,
                   rounds=rounds, warmup=warmup, steps=workers[0][0]["steps"],
                   load=load.describe(), warnings=load.warnings(),
                   command=command, backend="several processes")
    return rows, machine
