"""Picking the tf.distribute strategy (TensorFlow backend) or the Keras
distribution (JAX backend) that a training run uses.

`--strategy`:
    auto          TPUStrategy when a TPU is reachable (`--tpu` name or address,
                  or the TPU_NAME / Colab environment); MultiWorkerMirrored
                  when TF_CONFIG lists several workers; Mirrored when there
                  are several GPUs; else the default strategy (one device).
    tpu           TPUStrategy (fails if no TPU is reachable).
    mirrored      MirroredStrategy over the local GPUs (or CPUs, see
                  `cpu_devices`).
    multi_worker  MultiWorkerMirroredStrategy from TF_CONFIG.
    one_device    OneDeviceStrategy on the first GPU, else the CPU.

Under the JAX backend tf.distribute does not apply: `keras.distribution.
DataParallel` over `keras.distribution.list_devices()` plays its role (one
process; the batch is split across the local devices).
"""

import json
import logging
import os

import keras

logger = logging.getLogger("keras_mixer")

STRATEGIES = ("auto", "tpu", "mirrored", "multi_worker", "one_device")


def tf_config_workers():
    """Number of workers that TF_CONFIG names (0 when unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def task_info():
    """`(task_type, task_id)` from TF_CONFIG, `(None, None)` when unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None, None
    task = json.loads(raw).get("task", {})
    return task.get("type"), task.get("index")


def is_chief():
    """Whether this process writes the run's records (the chief, or worker 0
    when the cluster has no chief)."""
    task_type, task_id = task_info()
    if task_type is None:
        return True
    raw = json.loads(os.environ["TF_CONFIG"])
    if "chief" in raw.get("cluster", {}):
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def cpu_devices(count):
    """Splits the host CPU into `count` logical devices (before TF starts
    using it), so MirroredStrategy can be exercised on a CPU-only machine."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * count
    )
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _tpu_resolver(tpu):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu or None
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        return None, error
    return resolver, None


def get_strategy(name="auto", tpu=None, devices=None):
    """The tf.distribute strategy named `name` (see the module docstring).

    Args:
        name: one of `STRATEGIES`.
        tpu: TPU name or grpc:// address for TPUClusterResolver.
        devices: MirroredStrategy's devices (default: all GPUs, else the
            logical CPUs).
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}."
        )
    if name in ("auto", "tpu"):
        wants_tpu = name == "tpu" or tpu or os.environ.get("TPU_NAME") or (
            os.environ.get("COLAB_TPU_ADDR")
        )
        if wants_tpu:
            resolver, error = _tpu_resolver(tpu)
            if resolver is not None:
                return tf.distribute.TPUStrategy(resolver)
            if name == "tpu":
                raise ValueError(
                    f"--strategy tpu: no TPU reachable ({error}). Give --tpu "
                    "<name or grpc://address>, or run where a TPU is "
                    "attached."
                )
            logger.warning("No TPU reachable (%s); not using TPUStrategy.",
                           error)
    if name == "multi_worker" or (name == "auto" and tf_config_workers() > 1):
        if name == "multi_worker" and tf_config_workers() < 1:
            raise ValueError(
                "--strategy multi_worker needs TF_CONFIG naming the cluster "
                'and this task, e.g. {"cluster": {"worker": ["host1:port", '
                '"host2:port"]}, "task": {"type": "worker", "index": 0}}.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        if devices is None:
            devices = [d.name for d in gpus] or [
                d.name for d in tf.config.list_logical_devices("CPU")
            ]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(
            gpus[0].name if gpus else "/cpu:0"
        )
    return tf.distribute.get_strategy()


def jax_data_parallel():
    """Sets `keras.distribution.DataParallel` over all local devices (JAX
    backend) and returns it. With one device it sets nothing and returns
    None."""
    devices = keras.distribution.list_devices()
    if len(devices) < 2:
        return None
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return distribution


def replicas(strategy=None, distribution=None):
    """Number of replicas that split the global batch."""
    if strategy is not None:
        return strategy.num_replicas_in_sync
    if distribution is not None:
        return len(distribution.device_mesh.devices.reshape(-1))
    return 1


def check_batch(global_batch, num_replicas):
    """Refuses a global batch that the replicas cannot split evenly."""
    if global_batch % num_replicas:
        low = global_batch - global_batch % num_replicas
        raise ValueError(
            f"--batch_size {global_batch} is not divisible by the "
            f"{num_replicas} replicas: use a multiple of {num_replicas}, e.g. "
            f"{max(low, num_replicas)} or {low + num_replicas} (the global "
            "batch is per-replica batch x replicas)."
        )
    return global_batch // num_replicas


def patch_keras_for_multi_worker(model, strategy):
    """Works around two Keras 3 bugs that stop `fit` under
    MultiWorkerMirroredStrategy (keras-team/keras#20585, open as of 3.15);
    does nothing under any other strategy.

    1. Before the first step, `fit` builds the model from one batch, got by
       `strategy.reduce("MEAN", batch)` on the whole (images, labels)
       structure, which the collective strategy cannot reduce ("Attempt to
       convert a value (PerReplica ...)"). The build only needs shapes: this
       hands it the first local replica's batch.
    2. Each step's logs (scalar losses and metrics) are reduced with
       `strategy.reduce("MEAN", v, axis=0)`, invalid for scalars ("Invalid
       reduction dimension 0 for input with 0 dimensions"). Scalars are
       reduced with `axis=None` (the mean over replicas) instead; other
       values keep Keras's own reduction.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    original_build = model._maybe_symbolic_build

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        return original_build(iterator=None, data_batch=data_batch)

    model._maybe_symbolic_build = build

    original_reduce = tf_trainer.reduce_per_replica
    if getattr(original_reduce, "_keras_mixer_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            def mean(value):
                if getattr(value, "shape", None) is not None and (
                    value.shape.rank == 0
                ):
                    return strategy.reduce("MEAN", value, axis=None)
                return original_reduce(value, strategy, reduction)

            return tf.nest.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    reduce_per_replica._keras_mixer_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica
