"""The training subcommands of ``vsr-engine`` (the CLI's optional subcommand hook ``register(subparsers)``):
``train dscvsr``, ``distill [--data-free]`` and ``adapt``."""
from __future__ import annotations


def _recipe(subparsers, name: str, module, help: str, extra=None) -> None:
    p = subparsers.add_parser(name, help=help, description=module.__doc__.split("\n\n")[0])
    if extra:
        extra(p)
    module.add_arguments(p)

    def run(args) -> int:
        print(module.train(args))
        return 0
    p.set_defaults(func=run)


def register(subparsers) -> None:
    from . import adapt, distill, loop
    _recipe(subparsers, "train", loop, "train DSCVSR by distillation from official BasicVSR",
            lambda p: p.add_argument("model", choices=["dscvsr"]))
    _recipe(subparsers, "distill", distill, "distil a small BasicVSR from a video teacher (--data-free: no data)")
    _recipe(subparsers, "adapt", adapt, "adapt a small SR model to your own footage (USR-DA, unsupervised)")
