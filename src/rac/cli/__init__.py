"""The ``rac`` command line: parse arguments, call the library, print one-line errors.

This package is the only place that knows about arguments and exit codes. Each verb is a module
of its own (``rac.cli.VERB``) with its arguments beside its command: ``add(subparsers)`` declares
the verb, and the function it sets as ``func`` runs it; ``rac.cli.common`` holds what several
verbs share.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from safetensors import SafetensorError

from rac.io import RacError

EXIT_USER_ERROR = 2
# in the order `rac --help` lists them
VERBS = ("problems", "eval", "grade", "traces", "calib", "prune", "quantize", "search", "sweep",
         "compare", "recon", "demo", "toy")


class Parser(argparse.ArgumentParser):
    """Bad arguments get one line (what is wrong, where to look) and exit status 2, not the usage."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rac", description="Reasoning-aware compression.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"rac.cli.{verb}").add(sub)
    return parser


def _quiet_libraries() -> None:
    """Our own progress bars say what runs; the libraries' per-file bars are noise."""
    import datasets
    import huggingface_hub
    import transformers

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument already reported in one line
        return e.code if isinstance(e.code, int) else EXIT_USER_ERROR
    _quiet_libraries()
    try:
        args.func(args)
    except (RacError, ValueError) as e:
        print(f"rac {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # e.g. `rac calib --inspect DIR | head`
        sys.stderr.close()
        return 0
    except (OSError, SafetensorError) as e:  # disk full, permissions: the environment, not a bug
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        print(f"rac {args.verb}: error: cannot read or write{where}: {reason}; "
              "nothing partial was kept", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"rac {args.verb}: interrupted; finished work is kept, rerun to continue",
              file=sys.stderr)
        return 130
    return 0
