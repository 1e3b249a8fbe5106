"""Amazon review sentiment pipeline: data -> BPE -> BiGRU teacher -> compression -> ESP32.

tfmot only accepts tf_keras models, so the legacy Keras is selected before TensorFlow loads.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


INTERRUPTED = "interrupted: rerun the same command to resume (finished stages are kept)"
"""What a CLI prints (instead of a traceback) when Ctrl-C stops it; it then exits with 130."""


def setup_logging(quiet: bool = False) -> None:
    """Progress logging for the long-running CLIs: ``HH:MM:SS logger message`` on stderr.

    ``quiet`` (``-q``): warnings and errors only, no progress bars or progress lines. An uncaught
    Ctrl-C then ends the CLI with the one line :data:`INTERRUPTED` and exit status 130.
    """
    import logging
    import sys

    from pipeline import progress

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)
    progress.quiet(quiet)
    previous = sys.excepthook

    def hook(kind, value, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print(INTERRUPTED, file=sys.stderr)
            sys.stderr.flush()
            os._exit(130)
        previous(kind, value, tb)

    sys.excepthook = hook
