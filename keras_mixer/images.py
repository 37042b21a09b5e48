"""Encoded images decoded with a bound, and the evaluation crops (TensorFlow
ops: they run eagerly, in tf.data and in exported signatures alike).

`decode_image` reads the width and height from the file's header first and
refuses an image of more than `max_image_pixels()` pixels (default
`MAX_IMAGE_PIXELS`, 64 Mpx, or the environment variable
KERAS_MIXER_MAX_IMAGE_PIXELS) with an InvalidArgumentError naming the limit,
before any pixel is decoded. Training's image folders, the serving signature
and `keras-mixer predict` all decode through it.

The evaluation crops (the paper's Appendix C) are shared by the validation
pipelines and the `image_bytes` serving signature: "resmall_crop" (shorter
side to size·256/224, central crop) or "resize_crop" (resize to a square of
side size·256/224, central crop).
"""

import os

import tensorflow as tf

EVAL_CROPS = ("resmall_crop", "resize_crop")
# Largest image decoded, in pixels (width x height): 64 Mpx, e.g. 8192x8192
# or a 61 Mpx camera's 9504x6336. Decoding takes 3 bytes per pixel, so one
# image at the limit needs 192 MB. KERAS_MIXER_MAX_IMAGE_PIXELS overrides it.
MAX_IMAGE_PIXELS = 1 << 26
MAX_PIXELS_ENV = "KERAS_MIXER_MAX_IMAGE_PIXELS"


# Written with explicit tf.cond / tf.case / tf.while_loop: AutoGraph has
# nothing to convert, and skipping it saves most of the tracing time.
_graph_code = tf.autograph.experimental.do_not_convert


def max_image_pixels():
    """The decoding limit in pixels: KERAS_MIXER_MAX_IMAGE_PIXELS, else
    `MAX_IMAGE_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if not value:
        return MAX_IMAGE_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(
            f"{MAX_PIXELS_ENV}={value!r}: give a positive number of pixels "
            f"(default {MAX_IMAGE_PIXELS})."
        )
    return limit


# Formats as tf.io.decode_image tells them apart (by their first bytes).
_UNKNOWN, _JPEG, _PNG, _GIF, _BMP = 0, 1, 2, 3, 4


def _bytes_at(contents, offset, length):
    """`length` bytes of `contents` from `offset`, as int64 (0 past the end)."""
    size = tf.strings.length(contents, unit="BYTE")
    offset = tf.minimum(tf.cast(offset, tf.int32), size)
    raw = tf.io.decode_raw(tf.strings.substr(contents, offset, length),
                           tf.uint8)
    raw = tf.cast(raw, tf.int64)
    return tf.pad(raw, [[0, length - tf.shape(raw)[0]]])


def _little(raw):
    return tf.reduce_sum(raw * tf.bitwise.left_shift(
        tf.constant(1, tf.int64), 8 * tf.range(tf.size(raw, tf.int64))))


def _big(raw):
    return _little(tf.reverse(raw, [0]))


@_graph_code
def _gif_first_frame(contents):
    """(end of the first frame's data, its height, its width), walking the
    GIF's blocks; end is -1 when the file has no complete first frame.

    TensorFlow's GIF decoder reads every frame before it returns the first,
    so the bounded decoder cuts the file after the first frame.
    """
    size = tf.cast(tf.strings.length(contents, unit="BYTE"), tf.int64)
    flags = _bytes_at(contents, 10, 1)[0]
    table = tf.where(flags >= 128,
                     3 * tf.bitwise.left_shift(tf.constant(2, tf.int64),
                                               flags % 8), 0)
    # stage 0: at a block; 1: in an extension's sub-blocks; 2: in the
    # image's sub-blocks; 3: done; 4: malformed.
    state = (13 + table, tf.constant(0, tf.int64), tf.constant(0, tf.int64),
             tf.constant(0, tf.int64))

    def step(pos, stage, height, width):
        head = _bytes_at(contents, pos, 10)
        byte = head[0]
        descriptor = tf.logical_and(tf.equal(stage, 0), tf.equal(byte, 0x2C))
        extension = tf.logical_and(tf.equal(stage, 0), tf.equal(byte, 0x21))
        local = tf.where(head[9] >= 128, 3 * tf.bitwise.left_shift(
            tf.constant(2, tf.int64), head[9] % 8), 0)
        in_blocks = stage > 0
        new_pos = tf.where(
            descriptor, pos + 11 + local,
            tf.where(extension, pos + 2,
                     tf.where(in_blocks, pos + 1 + byte, pos)))
        new_stage = tf.where(
            descriptor, tf.constant(2, tf.int64),
            tf.where(extension, tf.constant(1, tf.int64),
                     tf.where(tf.logical_and(in_blocks, tf.equal(byte, 0)),
                              tf.where(tf.equal(stage, 2),
                                       tf.constant(3, tf.int64),
                                       tf.constant(0, tf.int64)),
                              tf.where(in_blocks, stage,
                                       tf.constant(4, tf.int64)))))
        height = tf.where(descriptor, _little(head[7:9]), height)
        width = tf.where(descriptor, _little(head[5:7]), width)
        return new_pos, new_stage, height, width

    pos, stage, height, width = tf.while_loop(
        lambda pos, stage, h, w: tf.logical_and(stage < 3, pos < size),
        step, state)
    end = tf.where(tf.logical_and(tf.equal(stage, 3), pos <= size), pos, -1)
    return end, height, width


@_graph_code
def image_header(contents):
    """What an encoded image's header says, without decoding it:
    `(format, height, width, contents to decode)`.

    `format` is 1 JPEG, 2 PNG, 3 GIF, 4 BMP (how tf.io.decode_image tells
    them apart), 0 anything else or a header that cannot be read. A GIF is
    cut after its first frame, and its size is the larger of its screen and
    its first frame (both are allocated when it is decoded).
    """
    head = _bytes_at(contents, 0, 32)

    def starts(magic):
        return tf.reduce_all(tf.equal(head[:len(magic)], list(magic)))

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(contents), tf.int64)
        return tf.constant(_JPEG, tf.int64), shape[0], shape[1], contents

    def png():
        return (tf.constant(_PNG, tf.int64), _big(head[20:24]),
                _big(head[16:20]), contents)

    def gif():
        end, frame_height, frame_width = _gif_first_frame(contents)
        height = tf.maximum(_little(head[8:10]), frame_height)
        width = tf.maximum(_little(head[6:8]), frame_width)
        kind = tf.where(end > 0, tf.constant(_GIF, tf.int64),
                        tf.constant(_UNKNOWN, tf.int64))
        first = tf.strings.substr(contents, 0,
                                  tf.cast(tf.maximum(end, 0), tf.int32))
        return kind, height, width, first + "\x3b"

    def bmp():
        # BITMAPCOREHEADER (12 bytes): 16-bit sides; later headers: signed
        # 32-bit sides (a negative height is a top-down image).
        core = tf.equal(_little(head[14:18]), 12)

        def signed(raw):
            value = _little(raw)
            return tf.abs(tf.where(value >= 1 << 31, value - (1 << 32), value))

        height = tf.where(core, _little(head[20:22]), signed(head[22:26]))
        width = tf.where(core, _little(head[18:20]), signed(head[18:22]))
        return tf.constant(_BMP, tf.int64), height, width, contents

    def unknown():
        zero = tf.constant(0, tf.int64)
        return tf.constant(_UNKNOWN, tf.int64), zero, zero, contents

    return tf.case([
        (starts(b"\xff\xd8\xff"), jpeg),
        (starts(b"\x89PNG"), png),
        (starts(b"GIF8"), gif),
        (starts(b"BM"), bmp),
    ], default=unknown, exclusive=False)


def _message(*parts):
    """A string tensor joining strings and numbers (tensors or not)."""
    strings = []
    for part in parts:
        if isinstance(part, str):
            strings.append(part)
        else:
            part = tf.convert_to_tensor(part)
            strings.append(part if part.dtype == tf.string
                           else tf.strings.as_string(part))
    return tf.strings.join(strings)


def _require(condition, message):
    """Raises InvalidArgumentError with `message` unless `condition`: at once
    when eager, else through the returned control dependencies."""
    if tf.executing_eagerly():
        if not bool(condition):
            raise tf.errors.InvalidArgumentError(
                None, None, message.numpy().decode("utf-8", "replace"))
        return []
    return [tf.debugging.Assert(condition, [message])]


@_graph_code
def check_image_header(contents, max_pixels=None, what="image"):
    """Reads an encoded image's header and refuses it when it is no JPEG,
    PNG, GIF or BMP image, or when it has more than `max_pixels` pixels
    (default `max_image_pixels()`): tf.errors.InvalidArgumentError naming
    `what` (a path, or `image_bytes[i]`; a string or string tensor) and the
    limit. Returns `(height, width, contents to decode)`.
    """
    limit = int(max_pixels or max_image_pixels())
    kind, height, width, contents = image_header(contents)
    known = _require(tf.logical_and(kind > 0, tf.minimum(height, width) > 0),
                     _message(
        what, " is not a JPEG, PNG, GIF or BMP image (or its header is "
        "damaged)."))
    with tf.control_dependencies(known):
        bounded = _require(height * width <= limit, _message(
            what, " is ", width, "x", height, " pixels, over the decoding "
            f"limit of {limit} pixels: send a smaller image (the limit is "
            f"{MAX_PIXELS_ENV} or max_pixels=, fixed at export for a "
            "SavedModel)."))
    with tf.control_dependencies(bounded):
        return tf.identity(height), tf.identity(width), tf.identity(contents)


@_graph_code
def decode_image(contents, max_pixels=None, what="image"):
    """Decodes an encoded JPEG, PNG, GIF (first frame) or BMP image to
    uint8 RGB `[height, width, 3]`, with its size bounded.

    The header is checked first (`check_image_header`): an image of more
    than `max_pixels` pixels, or bytes that are none of those formats, fail
    with tf.errors.InvalidArgumentError naming `what` and the limit before
    anything is decoded. A corrupt image fails in the decoder, also with
    InvalidArgumentError.

    >>> png = tf.io.encode_png(tf.zeros((4, 6, 3), tf.uint8))
    >>> keras_mixer.images.decode_image(png).shape
    TensorShape([4, 6, 3])
    """
    _, _, contents = check_image_header(contents, max_pixels, what)
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


@_graph_code
def shrink(image, max_side):
    """`image` (uint8) resized, aspect kept, so that its shorter side is at
    most `max_side` (antialiased bilinear); smaller images are unchanged."""
    shape = tf.shape(image)[:2]
    shorter = tf.reduce_min(shape)

    def resize():
        scale = max_side / tf.cast(shorter, tf.float32)
        size = tf.maximum(tf.cast(tf.round(
            tf.cast(shape, tf.float32) * scale), tf.int32), 1)
        small = tf.image.resize(image, size, method="bilinear",
                                antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8)

    return tf.cond(shorter > max_side, resize, lambda: image)


# ----------------------------------------------------------------------------
# Evaluation crops (single images, uint8 or float in [0, 255]).


def resmall_crop(image, size, ratio=256 / 224):
    """Resize the shorter side to `round(size * ratio)`, then central crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    small = tf.round(size * ratio)
    scale = small / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    new = tf.maximum(new, size)
    image = tf.image.resize(image, new, method="bilinear")
    top = (new[0] - size) // 2
    left = (new[1] - size) // 2
    return image[top: top + size, left: left + size]


def resize_crop(image, size, ratio=256 / 224):
    """Resize to a square of side `round(size * ratio)`, then central crop
    (the paper's "resize-crop", Appendix C: 256x256, then 224x224)."""
    big = int(round(size * ratio))
    image = tf.image.resize(image, (big, big), method="bilinear")
    top = (big - size) // 2
    return image[top: top + size, top: top + size]
