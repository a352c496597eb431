"""The training subcommands of ``vsr-engine`` (the CLI's optional subcommand hook ``register(subparsers)``)."""
from __future__ import annotations


def register(subparsers) -> None:
    from . import loop
    p = subparsers.add_parser("train", help="train DSCVSR by distillation from official BasicVSR",
                              description=loop.__doc__.split("\n\n")[0])
    p.add_argument("model", choices=["dscvsr"])
    loop.add_arguments(p)

    def run(args) -> int:
        print(loop.train(args))
        return 0
    p.set_defaults(func=run)
