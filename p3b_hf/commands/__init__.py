"""One module per ``p3b-hf`` subcommand: ``add_arguments(parser)`` and ``run(args)``."""
