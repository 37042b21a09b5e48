"""Input pipelines: bundled digits, image folders, tfds, crops, augmentation."""

import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

import bombs  # tests/bombs.py
from keras_mixer.images import MAX_PIXELS_ENV
from keras_mixer.images import decode_image
from keras_mixer.images import image_header
from keras_mixer.training import data
from keras_mixer.training import folders
from keras_mixer.training import sources


def test_digits_are_sklearns_1797_with_their_class_counts():
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    # scikit-learn's documented class sizes for load_digits.
    assert np.bincount(labels).tolist() == [
        178, 182, 177, 183, 181, 182, 181, 179, 174, 180
    ]
    # The first digit of the file is a 0 with a hollow centre.
    assert labels[0] == 0 and images[0, 3, 3:5].max() <= 2


def test_corrupt_digits_file_is_refused(tmp_path, monkeypatch):
    broken = tmp_path / "digits.csv.gz"
    raw = bytearray(sources.DIGITS_FILE.read_bytes())
    raw[100] ^= 0xFF
    broken.write_bytes(bytes(raw))
    monkeypatch.setattr(sources, "DIGITS_FILE", broken)
    with pytest.raises(OSError, match="is corrupt .* Reinstall keras-mixer"):
        data.load_digits()


def test_digit_splits_partition_the_set():
    train, val = data.digits_split("train"), data.digits_split("validation")
    assert len(train) == 1437 and len(val) == 360
    assert not set(train) & set(val)
    assert sorted(set(train) | set(val)) == list(range(1797))
    with pytest.raises(ValueError, match="splits 'train' and 'validation'"):
        data.digits_split("test2")


def test_digits_pipeline_shapes_values_and_labels():
    ds, info = data.build_dataset("digits", "validation", image_size=16,
                                  batch_size=50, training=False,
                                  eval_crop="resize_crop")
    assert (info.num_classes, info.num_examples, info.flip) == (10, 360, False)
    batches = list(ds)
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.shape == (360, 16, 16, 3) and images.dtype == np.float32
    assert labels.shape == (360, 10)
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    assert 0 <= images.min() and images.max() <= 255.0 + 1e-3
    # Grey images: the three channels are equal.
    np.testing.assert_allclose(images[..., 0], images[..., 2])
    # Labels follow the file, in split order.
    _, all_labels = data.load_digits()
    np.testing.assert_array_equal(
        labels.argmax(1), all_labels[data.digits_split("validation")]
    )
    # Evaluation is deterministic.
    again = np.concatenate([b[0] for b in ds])
    np.testing.assert_array_equal(images, again)


def test_training_pipeline_augments_and_drops_the_remainder():
    ds, _ = data.build_dataset("digits", "train", image_size=16, batch_size=64,
                               training=True, crop_area=(0.5, 1.0), seed=1)
    first = [b for b in ds.take(3)]
    for images, labels in first:
        assert images.shape == (64, 16, 16, 3) and labels.shape == (64, 10)
    ds2, _ = data.build_dataset("digits", "train", image_size=16,
                                batch_size=64, training=True,
                                crop_area=(0.5, 1.0), seed=1)
    # Same seed, same first batch; another seed, another batch.
    np.testing.assert_array_equal(first[0][0], next(iter(ds2))[0])
    ds3, _ = data.build_dataset("digits", "train", image_size=16,
                                batch_size=64, training=True,
                                crop_area=(0.5, 1.0), seed=2)
    assert not np.array_equal(first[0][0], next(iter(ds3))[0])


def _ramp(height, width):
    """An image whose pixels encode their own coordinates."""
    rows = np.arange(height, dtype=np.float32)[:, None] * np.ones((1, width))
    cols = np.ones((height, 1)) * np.arange(width, dtype=np.float32)[None, :]
    return np.stack([rows, cols, rows + cols], -1).astype(np.float32)


def test_resmall_crop_keeps_the_centre_of_the_shorter_side_resize():
    image = _ramp(70, 140)
    out = data.resmall_crop(tf.constant(image), 56).numpy()
    assert out.shape == (56, 56, 3)
    # Shorter side 70 -> round(56 * 256 / 224) = 64, longer 140 -> 128; the
    # central 56x56 starts at row 4, column 36 of the resized image.
    resized = tf.image.resize(image, (64, 128)).numpy()
    np.testing.assert_allclose(out, resized[4:60, 36:92], atol=1e-4)
    # Centre pixel maps back to the centre of the original (half-pixel grid).
    centre = out[28, 28]
    assert centre[0] == pytest.approx((32 + 0.5) * 70 / 64 - 0.5, abs=0.6)
    assert centre[1] == pytest.approx((64 + 0.5) * 140 / 128 - 0.5, abs=0.6)


def test_resize_crop_squashes_then_crops_the_centre():
    image = _ramp(70, 140)
    out = data.resize_crop(tf.constant(image), 56).numpy()
    resized = tf.image.resize(image, (64, 64)).numpy()
    np.testing.assert_allclose(out, resized[4:60, 4:60], atol=1e-4)


def test_inception_crop_with_full_area_is_a_plain_resize():
    image = _ramp(40, 40)
    out = data.inception_crop(tf.constant(image), 20, tf.constant([1, 2]),
                              area_range=(1.0, 1.0),
                              aspect_ratio_range=(1.0, 1.0)).numpy()
    np.testing.assert_allclose(out, tf.image.resize(image, (20, 20)).numpy(),
                               atol=1e-4)
    small = data.inception_crop(tf.constant(image), 20, tf.constant([1, 2]),
                                area_range=(0.1, 0.2)).numpy()
    # A crop of at most 20% of the area spans fewer coordinates.
    assert np.ptp(small[..., 2]) < 0.75 * np.ptp(out[..., 2])


def test_randaugment_magnitude_maps_to_keras_factor():
    assert data.randaugment_factor(10) == 0.5
    assert data.randaugment_factor(20) == 1.0
    with pytest.raises(ValueError, match="outside 0..20"):
        data.randaugment_factor(30)
    ds, _ = data.build_dataset("digits", "train", image_size=16, batch_size=8,
                               training=True, randaugment=(2, 15))
    images, _ = next(iter(ds))
    assert images.shape == (8, 16, 16, 3)
    assert np.isfinite(images).all() and images.numpy().max() <= 255.0


@pytest.mark.parametrize("mixup, cutmix", [(0.5, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_and_cutmix_mix_labels_as_distributions(mixup, cutmix):
    plain, _ = data.build_dataset("digits", "train", image_size=16,
                                  batch_size=32, training=True, seed=3)
    mixed, _ = data.build_dataset("digits", "train", image_size=16,
                                  batch_size=32, training=True, seed=3,
                                  mixup=mixup, cutmix=cutmix)
    (_, hard), (images, soft) = next(iter(plain)), next(iter(mixed))
    soft = soft.numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert (soft >= 0).all()
    # Some labels are now mixtures of two classes.
    assert ((soft > 0.01) & (soft < 0.99)).any()
    assert images.shape == (32, 16, 16, 3)


# ----------------------------------------------------------------------------
# Image folders.


def _png(path, value, size=(12, 10), channels=3):
    image = np.full(size + (channels,), value, np.uint8)
    path.write_bytes(tf.io.encode_png(image).numpy())


def _jpeg(path, value, size=(12, 10)):
    image = np.full(size + (3,), value, np.uint8)
    path.write_bytes(tf.io.encode_jpeg(image).numpy())


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "flowers"
    for c, name in enumerate(["daisy", "rose", "tulip"]):
        (root / name).mkdir(parents=True)
        for i in range(10):
            if i % 2:
                _png(root / name / f"{i}.png", 40 * c + i)
            else:
                _jpeg(root / name / f"{i}.jpg", 40 * c + i)
    # Grayscale and RGBA images are read as RGB.
    _png(root / "rose" / "grey.png", 90, channels=1)
    _png(root / "rose" / "rgba.png", 90, channels=4)
    # Bad files: empty, truncated JPEG, text named .jpg, unknown extension.
    (root / "daisy" / "empty.jpg").write_bytes(b"")
    good = (root / "daisy" / "0.jpg").read_bytes()
    (root / "daisy" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "tulip" / "notes.jpg").write_text("not an image at all, really")
    (root / "tulip" / "readme.txt").write_text("hello")
    return root


def test_image_folder_skips_and_counts_corrupt_files(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_mixer"):
        paths, labels, classes, skipped = folders.scan_image_folder(folder)
    assert classes == ["daisy", "rose", "tulip"]
    assert len(skipped) == 4 and len(paths) == 32
    assert "Skipped 4 file(s)" in caplog.text
    for name in ("empty.jpg", "truncated.jpg", "notes.jpg", "readme.txt"):
        assert name in caplog.text  # each named
    assert np.bincount(labels).tolist() == [10, 12, 10]


def test_image_folder_dataset_holds_out_a_validation_share(folder):
    train, info = data.build_dataset(f"folder:{folder}", "train",
                                     image_size=8, batch_size=4,
                                     training=False)
    val, val_info = data.build_dataset(str(folder), "validation",
                                       image_size=8, batch_size=4,
                                       training=False)
    n_train = sum(len(b[0]) for b in train)
    n_val = sum(len(b[0]) for b in val)
    assert (n_train, n_val) == (29, 3)  # 10% of each class, rounded.
    assert info.num_classes == 3 and info.skipped_files == 4
    assert info.class_names == ["daisy", "rose", "tulip"]
    images = np.concatenate([b[0] for b in train])
    assert images.shape[1:] == (8, 8, 3)


def test_image_folder_with_train_and_val_subfolders(folder, tmp_path):
    root = tmp_path / "split"
    shutil.copytree(folder, root / "train")
    shutil.copytree(folder, root / "val")
    _, info = data.build_dataset(str(root), "train", image_size=8,
                                 batch_size=4, training=False)
    assert info.num_examples == 32
    _, info = data.build_dataset(str(root), "validation", image_size=8,
                                 batch_size=4, training=False)
    assert info.num_examples == 32 and info.split == "validation"


def test_undecodable_file_is_named_counted_and_dropped(folder, caplog):
    # A PNG signature and IEND trailer around garbage: the byte check lets it
    # through; decoding fails inside tf.data, the file is logged by path,
    # counted and dropped, while the rest flows on.
    garbage = folder / "rose" / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + b"IEND\xaeB`\x82")
    _, _, _, skipped = folders.scan_image_folder(folder)
    assert len(skipped) == 4
    with caplog.at_level(logging.WARNING, logger="keras_mixer"):
        ds, info = data.build_dataset(str(folder), "train", image_size=8,
                                      batch_size=4, training=False)
        # Read once while building (the cache): counted before training.
        assert info.skipped_files == 5 and str(garbage) in info.skipped
        assert f"Skipped unreadable image {garbage}" in caplog.text
        assert info.num_examples == 30  # listed, one of them undecodable
        assert sum(len(b[0]) for b in ds) == 29
    # Uncached, the same happens as the pipeline runs.
    ds, info = data.source(str(folder), "train")
    assert sum(1 for _ in ds) == 29 and str(garbage) in info.skipped


def test_class_without_a_decodable_image_and_empty_folder_name(folder):
    for path in (folder / "tulip").iterdir():
        path.unlink()
    (folder / "tulip" / "fake.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + b"IEND\xaeB`\x82")
    with pytest.raises(ValueError, match="class folder.*tulip hold no readable"):
        data.build_dataset(str(folder), "train", image_size=8, batch_size=4,
                           training=True)
    for name in ("folder:", "folder: "):
        with pytest.raises(ValueError, match="names no folder: give folder:PATH"):
            data.check_dataset_name(name)
        with pytest.raises(ValueError, match="names no folder"):
            data.source(name, "train")


def test_folder_images_are_shrunk_before_the_cache(tmp_path):
    """A 300x200 image for a 16 px model is held at a shorter side of 32."""
    root = tmp_path / "big"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            _png(root / c / f"{i}.png", 100 + i, size=(200, 300))
    ds, info = data.source(str(root), "train", image_size=16)
    shapes = {tuple(image.shape) for image, _ in ds}
    assert shapes == {(32, 48, 3)}
    train, _ = data.build_dataset(str(root), "train", image_size=16,
                                  batch_size=2, training=False)
    images = np.concatenate([b[0] for b in train])
    np.testing.assert_allclose(images[0], 100, atol=1)


def _patched(blob, offset, value, size, order):
    return blob[:offset] + value.to_bytes(size, order) + blob[offset + size:]


def test_image_sizes_are_read_from_headers_and_bounded(monkeypatch):
    """Each format's header is read (no decoding): JPEG's frame header, PNG's
    IHDR, GIF's screen and first frame, BMP's info header. Over the limit:
    InvalidArgumentError naming the image and the limit."""
    from PIL import Image
    import io

    def encode(fmt, size=(12, 10), **kw):
        buffer = io.BytesIO()
        Image.new("RGB", size, (200, 30, 60)).save(buffer, fmt, **kw)
        return buffer.getvalue()

    jpeg, gif, bmp = encode("JPEG"), encode("GIF"), encode("BMP")
    sof = jpeg.index(b"\xff\xc0") + 5
    frame = gif.index(b"\x2c\x00\x00\x00\x00") + 5
    huge = {
        "jpeg": _patched(_patched(jpeg, sof, 40000, 2, "big"), sof + 2, 40000, 2, "big"),
        "png": bombs.png_bomb(23000),
        "gif screen": _patched(_patched(gif, 6, 40000, 2, "little"), 8, 40000, 2, "little"),
        "gif frame": _patched(_patched(gif, frame, 40000, 2, "little"), frame + 2, 40000, 2, "little"),
        "bmp": _patched(_patched(bmp, 18, 40000, 4, "little"), 22, 40000, 4, "little"),
    }
    for name, blob in huge.items():
        size = "23000x23000" if name == "png" else "40000x40000"
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=f"{name} is {size} pixels, over the decoding "
                           "limit of 67108864 pixels"):
            decode_image(tf.constant(blob), what=name)
    # An animated GIF is cut after its first frame: the decoder never reads
    # the others.
    frames = [Image.new("RGB", (12, 10), (i * 40, 0, 0)) for i in range(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    animated = buffer.getvalue()
    kind, height, width, first = image_header(tf.constant(animated))
    assert (int(kind), int(height), int(width)) == (3, 10, 12)
    assert len(first.numpy()) < len(animated) / 2
    np.testing.assert_array_equal(
        decode_image(tf.constant(animated)),
        tf.io.decode_gif(animated)[0])
    # The limit is configurable.
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="small is 12x10 pixels, over the decoding limit "
                       "of 100 pixels"):
        decode_image(tf.constant(jpeg), what="small")
    assert decode_image(tf.constant(jpeg), max_pixels=120).shape == (10, 12, 3)


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("empty", "has no class sub-folders"),
    ("flat", "has no class sub-folders"),
    ("no_images", "but no readable image"),
    ("one_class_empty", "class folder.*dogs hold no readable image"),
])
def test_bad_image_folders_are_refused(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "flat":
        _png(root / "a.png", 1)
    if layout == "no_images":
        (root / "cats").mkdir()
        (root / "cats" / "list.txt").write_text("x")
    if layout == "one_class_empty":
        (root / "cats").mkdir()
        _png(root / "cats" / "a.png", 1)
        (root / "dogs").mkdir()
        (root / "dogs" / "list.txt").write_text("x")
    with pytest.raises(ValueError, match=message):
        data.build_dataset(f"folder:{root}", "train", image_size=8,
                           batch_size=2, training=True)


# ----------------------------------------------------------------------------
# tensorflow-datasets.


def test_unknown_dataset_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet_9k'.*"
                       "'digits'.*cifar10"):
        data.check_dataset_name("imagenet_9k")
    with pytest.raises(ValueError, match="does not exist"):
        data.check_dataset_name("/no/such/folder")
    data.check_dataset_name("digits")


def test_tfds_dataset_by_name_offline_with_mock_data():
    from unittest import mock

    tfds = pytest.importorskip("tensorflow_datasets")
    # mock_data stands in for prepared files; tell the check they are there.
    with tfds.testing.mock_data(num_examples=12,
                                policy=tfds.testing.MockPolicy.USE_CODE), \
            mock.patch.object(tfds.core.DatasetBuilder, "is_prepared",
                              return_value=True):
        ds, info = data.build_dataset("cifar10", "validation", image_size=16,
                                      batch_size=4, training=False)
        images, labels = next(iter(ds))
        assert info.num_classes == 10 and info.name == "cifar10"
        assert images.shape == (4, 16, 16, 3) and labels.shape == (4, 10)
        ds, info = data.build_dataset("cifar10", "train", image_size=16,
                                      batch_size=4, training=True,
                                      randaugment=(2, 10), mixup=0.2)
        images, labels = next(iter(ds))
        assert images.shape == (4, 16, 16, 3) and info.flip
        # Splits: a minival held out of train, test for evaluation.
        assert sources._tfds_split("cifar10", "train") == "train[:98%]"
        assert sources._tfds_split("cifar10", "minival") == "train[98%:]"
        assert sources._tfds_split("cifar10", "validation") == "test"


def test_an_unprepared_tfds_dataset_fails_fast_with_the_ways_forward(
        tmp_path, cli_usage_error):
    """Offline and not prepared in --data_dir: refused in seconds, from the
    files there, before tfds would try to download (no network here)."""
    import time

    pytest.importorskip("tensorflow_datasets")
    empty = tmp_path / "tfds"
    empty.mkdir()
    start = time.perf_counter()
    message = cli_usage_error("train", "--dataset=cifar10",
                              f"--data_dir={empty}",
                              f"--output_dir={tmp_path / 'run'}")
    assert time.perf_counter() - start < 10
    assert f"no prepared copy of 'cifar10' in {empty}" in message
    assert f"`tfds build cifar10 --data_dir {empty}`" in message
    assert "--data_dir" in message and "--dataset folder:PATH" in message
    with pytest.raises(ValueError, match="no prepared copy of 'cifar10'"):
        data.build_dataset("cifar10", "validation", image_size=8,
                           batch_size=2, training=False, data_dir=str(empty))
    assert not list(empty.rglob("*.tfrecord*"))
    assert not (tmp_path / "run").exists()


def test_a_prepared_tfds_dataset_loads_offline(tmp_path):
    """A dataset prepared in a data_dir (here a small one written by a
    builder of this test) passes the check and loads; and the download path
    tfds takes for real datasets imports (importlib_resources: setup.py
    declares it, tensorflow-datasets does not)."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class KerasMixerTinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(10, 12, 3)),
                    "label": tfds.features.ClassLabel(names=["a", "b"]),
                }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(8),
                    "test": self._generate_examples(4)}

        def _generate_examples(self, count):
            rng = np.random.default_rng(count)
            for i in range(count):
                yield i, {"image": rng.integers(0, 255, (10, 12, 3), np.uint8),
                          "label": i % 2}

    name = KerasMixerTinyImages.name
    builder = KerasMixerTinyImages(data_dir=str(tmp_path))
    builder.download_and_prepare()
    data.check_dataset_name(name, str(tmp_path))
    ds, info = data.build_dataset(name, "validation", image_size=8,
                                  batch_size=4, training=False,
                                  data_dir=str(tmp_path))
    images, labels = next(iter(ds))
    assert info.class_names == ["a", "b"] and info.num_examples == 4
    assert images.shape == (4, 8, 8, 3) and labels.shape == (4, 2)
    cifar = tfds.builder("cifar10", data_dir=str(tmp_path))
    assert cifar.code_path.name == "cifar.py"
