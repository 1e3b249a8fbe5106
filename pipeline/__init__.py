"""Amazon review sentiment pipeline: data -> BPE -> BiGRU teacher -> compression -> ESP32.

tfmot only accepts tf_keras models, so the legacy Keras is selected before TensorFlow loads.

TensorFlow's start-up noise is silenced here, in one place, before TensorFlow loads (numerics
untouched: oneDNN stays as TensorFlow sets it, only its notice is hidden):

- ``TF_CPP_MIN_LOG_LEVEL=2``: TensorFlow's C++ info and warning lines (the oneDNN notice, CPU
  instruction notes); errors still show.
- The lines TensorFlow's C++ prints before that setting applies, or as errors on any machine
  without a GPU: "Could not find cuda drivers" (twice, at import) and "failed call to cuInit" (at
  the first op). The first ``import tensorflow`` runs with stderr captured (and the CUDA platform
  probed, which is where cuInit fails); every captured line but those is written back.
- The ``tensorflow`` Python logger: warnings and up only (no "Assets written to ..."), without the
  repeated tf.function retracing warning and TensorFlow's deprecation notices, and without the
  Lambda-layer variable-tracking warning of ``pipeline.nn.models.logits_model`` (its Lambda reuses
  the Dense "prob" layer's weights on purpose). :func:`setup_logging` drops the handler TensorFlow
  adds when it loads before logging is configured, so no line appears twice.
- ``tf.lite.Interpreter``'s deprecation warning (the project uses it only for ``--runtime tflite``
  and conversion checks; TFLM is the reference interpreter).

``TINYSENT_TF_NOISE=1`` turns all of this off but the C++ log level.
"""

import importlib.abc
import logging
import os
import re
import sys
import warnings

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TF_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
)
"""C++ lines TensorFlow writes to stderr on loading on a CPU-only machine (not errors of this run)."""


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` with stderr (fd 2) captured; writes back all but
    :data:`TF_NOISE` lines. The module's own loader does the work, so nothing else changes."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        if _QUIET in sys.meta_path:
            sys.meta_path.remove(_QUIET)  # once: later imports find the loaded module
        module.__spec__.loader = module.__loader__ = self.loader
        with _stderr_without_noise():
            self.loader.exec_module(module)
            try:
                module.config.list_physical_devices("GPU")  # where cuInit fails without a GPU
            except Exception:  # the import itself worked; the first op will say what is wrong
                pass

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)


class _stderr_without_noise:
    """fd 2 into a temporary file for the block; afterwards its lines but :data:`TF_NOISE` go back."""

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self.saved = os.dup(2)
        self.capture = tempfile.TemporaryFile()
        os.dup2(self.capture.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        self.capture.seek(0)
        text = self.capture.read().decode("utf-8", "replace")
        self.capture.close()
        kept = [ln for ln in text.splitlines(keepends=True) if not TF_NOISE.search(ln)]
        if kept:
            os.write(2, "".join(kept).encode())


class _TensorFlowLogNoise(logging.Filter):
    """Drops the ``tensorflow`` logger's repeated notices (see the module docstring)."""

    NOISE = re.compile(r"triggered tf\.function retracing|is deprecated|deprecated and will be removed"
                       r"|were used a Lambda layer's call \(logit\)")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.NOISE.search(record.getMessage())


_QUIET = _QuietTensorFlowImport()
if os.environ.get("TINYSENT_TF_NOISE") != "1":
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QUIET)
    _tf_logger = logging.getLogger("tensorflow")
    _tf_logger.setLevel(logging.WARNING)
    _tf_logger.addFilter(_TensorFlowLogNoise())
    warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated",
                            category=UserWarning)


INTERRUPTED = "interrupted: rerun the same command to resume (finished stages are kept)"
"""What a CLI prints (instead of a traceback) when Ctrl-C stops it; it then exits with 130."""


def setup_logging(quiet: bool = False) -> None:
    """Progress logging for the long-running CLIs: ``HH:MM:SS logger message`` on stderr.

    ``quiet`` (``-q``): warnings and errors only, no progress bars or progress lines. An uncaught
    Ctrl-C then ends the CLI with the one line :data:`INTERRUPTED` and exit status 130.
    """
    from pipeline import progress

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)
    # TensorFlow gives its logger a handler of its own when it loads before the root logger has
    # one; the root's handler prints its lines already.
    logging.getLogger("tensorflow").handlers.clear()
    progress.quiet(quiet)
    previous = sys.excepthook

    def hook(kind, value, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print(INTERRUPTED, file=sys.stderr)
            sys.stderr.flush()
            os._exit(130)
        previous(kind, value, tb)

    sys.excepthook = hook
