"""Write every export format of a mixture from its weights JSON (``doremi-export``).

    python -m doremi_jax.export runs/x/proxy/export/synthetic_uniform_doremi.json [--out DIR]

The weights JSON (a proxy run's, or one written by the pipeline) carries its domains'
registration specs, so this works in a fresh process; data paths are resolved under
``$DOREMI_DATA_ROOT`` (default: the cache root). A mixture with streamed (not prepared)
domains gets every format but MaxText's, and one ``warning:`` line saying so.
"""
from __future__ import annotations

import sys
from typing import Sequence

from doremi_jax import errors, mixture_files


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, str]:
  parser = errors.ArgumentParser(prog="python -m doremi_jax.export",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("weights_json", help="a weights JSON with metadata (domain_specs)")
  parser.add_argument("--out", help="output dir (default: the JSON's own dir)")
  parser.add_argument("--name", help="mixture name (default: the JSON's name)")
  args = parser.parse_args(argv)
  paths = mixture_files.write_formats(args.weights_json, args.out, args.name)
  for fmt, path in paths.items():
    print(f"{fmt:8s} {path}")
  if "maxtext" not in paths:
    streamed = mixture_files.streamed_domains(mixture_files.load_weights(args.weights_json)[0])
    print(f"warning: {mixture_files.maxtext_needs_prepared(streamed)}", file=sys.stderr,
          flush=True)
  return paths


def console_main() -> None:
  main()


if __name__ == "__main__":
  main()
