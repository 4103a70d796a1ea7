"""The ``wtransplant`` command: parse, call one library function, print, map errors to exit
codes (0 ok, 1 parity failed, 2 bad input, 3 internal error). Library modules are
imported inside each command so ``wtransplant inspect`` never loads TensorFlow or Keras.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from wtransplant.errors import EXIT_INTERNAL, UnsafeInputError, WTError

DEBUG = bool(os.environ.get("WTRANSPLANT_DEBUG"))


def _err(msg: str) -> None:
    click.echo(f"wtransplant: error: {msg}", err=True)


def handle_errors(fn):
    """Every user-caused problem becomes one line on stderr and its exit code; anything else
    is an internal error (exit 3), with a traceback only under WTRANSPLANT_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WTError as e:
            if DEBUG:
                raise
            _err(str(e))
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except MemoryError:
            _err("out of memory")
            sys.exit(EXIT_INTERNAL)
        except Exception as e:  # a bug in wtransplant: say so, in one line
            if DEBUG:
                raise
            msg = " ".join(str(e).split())[:300]
            _err(f"internal error: {type(e).__name__}: {msg} (set WTRANSPLANT_DEBUG=1 for a "
                 f"traceback, and please report it)")
            sys.exit(EXIT_INTERNAL)

    return wrapper


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=_json_default, allow_nan=False))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wtransplant")
def main():
    """Move trained weights out of HDF5 files (PyTorch, MATLAB/Octave, Keras 2, home-made
    layouts) into working Keras 3 models, exactly."""


@main.command()
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--stats", is_flag=True,
              help="Add min/max/mean/std and NaN/Inf counts per tensor (read chunk by chunk).")
@click.option("--filter", "pattern", metavar="GLOB",
              help="Show only datasets whose path or name matches GLOB (e.g. '*.weight').")
@click.option("--depth", type=click.IntRange(min=0), metavar="N",
              help="Show groups down to depth N only.")
@click.option("--follow-links", is_flag=True,
              help="Follow external links and virtual datasets into other files.")
@handle_errors
def inspect(file, as_json, stats, pattern, depth, follow_links):
    """Show FILE's tree, shapes, dtypes, attributes, the program that wrote it and the
    architecture its tensors imply. Never imports TensorFlow or Keras."""
    from wtransplant.inspect import inspect_file

    report = inspect_file(file, stats=stats, follow_links=follow_links, stats_filter=pattern)
    if as_json:
        emit_json(report.to_dict())
    else:
        from .render import print_inspect

        print_inspect(report, pattern=pattern, depth=depth)
    if report.outside:
        more = f" (and {len(report.outside) - 1} more)" if len(report.outside) > 1 else ""
        raise UnsafeInputError(f"{report.outside[0]}{more}: data outside the file, not "
                               f"followed; pass --follow-links to follow", path=file)


if __name__ == "__main__":  # pragma: no cover
    main()
