"""`python -m keras_mixer` is the `keras-mixer` command."""

if __name__ == "__main__":
    from keras_mixer.cli import run

    run()
