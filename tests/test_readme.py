"""The README's examples run as written: every fenced block is extracted and
the short ones run (Python blocks in a fresh namespace, `keras-mixer` lines
through the command's own entry, in this process). A block that downloads
weights or data, installs packages, needs a server or trains a model is
skipped with that reason (the skips are listed in pytest's summary); the
journeys those stand for run in tests/test_journey.py and tests/test_train.py.
"""

import os
import re
import shlex

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
# Weight and dataset names that mean a download.
DOWNLOADS = re.compile(
    r"weights[= ]\"?(imagenet|sam|gsam|goog|miil|dino)|--dataset[= ]"
    r"(cifar|imagenet|oxford)|/data/|tfds build|cat\.jpg")
# keras-mixer commands that train, export or measure: minutes, or data.
LONG = ("train", "demo", "evaluate", "export", "predict", "benchmark",
        "visualize", "convert")


def _blocks():
    """(line number, language, text) of each fenced block."""
    lines = open(README, encoding="utf-8").read().splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if start is None:
                start, language, body = number, line[3:].strip(), []
            else:
                blocks.append((start, language, "\n".join(body)))
                start = None
        elif start is not None:
            body.append(line)
    return blocks


def _commands(text):
    """The shell block's commands, continuation lines joined, comments out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _skip_reason(language, text):
    if DOWNLOADS.search(text):
        return "downloads pretrained weights or a dataset"
    if language == "python":
        return None
    commands = _commands(text)
    if not any(c.split()[0] in ("keras-mixer", "pip", "python", "tfds")
               or "=" in c.split()[0] for c in commands):
        return "a listing, not commands"
    if any(c.startswith("pip ") for c in commands):
        return "installs packages"
    if any(not c.startswith("keras-mixer") for c in commands):
        return "needs a server, a cluster or another tool"
    if any(re.search(r"\[|\||\.\.\.|[A-Z]{3,}", c) for c in commands):
        return "a synopsis with placeholders"
    words = [shlex.split(c)[1] for c in commands if len(shlex.split(c)) > 1]
    if any(w in LONG and "--help" not in c for w, c in zip(words, commands)):
        return "trains, exports or measures a model (minutes, or data)"
    return None


def _cases():
    cases = []
    for line, language, text in _blocks():
        reason = _skip_reason(language, text)
        marks = [pytest.mark.skip(reason=f"README line {line}: {reason}")] \
            if reason else []
        cases.append(pytest.param(language, text, marks=marks,
                                  id=f"line{line}-{language or 'shell'}"))
    return cases


@pytest.mark.parametrize("language, text", _cases())
def test_readme_example_runs(language, text, capsys):
    import keras
    import numpy as np

    import keras_mixer
    from keras_mixer import cli

    if language == "python":
        # As in a notebook that ran the README's first block's imports.
        exec(compile(text, README, "exec"),
             {"keras": keras, "np": np, "keras_mixer": keras_mixer})
        return
    for command in _commands(text):
        assert cli.execute(shlex.split(command)) == 0, command
        out = capsys.readouterr().out
        assert out.strip(), command


def test_the_short_examples_are_the_ones_expected():
    """Which blocks run is decided by the rules above; this pins it, so a
    README edit that silently turns a runnable example into a skipped one
    shows up here."""
    run = [(language or "shell", text.splitlines()[0])
           for _, language, text in _blocks()
           if _skip_reason(language, text) is None]
    assert run == [
        ("python", "import keras"),
        ("python", "keras_mixer.MixerB16("),
        ("shell", "keras-mixer --help"),
    ]
