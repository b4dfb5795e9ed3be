#!/usr/bin/env python
"""Django's command-line utility for v2g.

Accepts ``-c/--config PATH`` before the command name, e.g.
``python manage.py -c config.prod.yaml runserver``: the file is handed to
settings (and to child processes such as the autoreloader) as $V2G_CONFIG.
"""

import os
import sys


def _export(option: str, path: str) -> None:
    if not os.path.isfile(path):
        sys.exit(f"v2g: config file {path} (from {option}) does not exist")
    os.environ["V2G_CONFIG"] = path


def _take_config_option(argv: list[str]) -> list[str]:
    """Strip -c/--config PATH appearing before the subcommand; export it."""
    args = list(argv)
    index = 1
    while index < len(args) and args[index].startswith("-"):
        arg = args[index]
        if arg in ("-c", "--config"):
            if index + 1 >= len(args):
                sys.exit(f"{arg} needs a path to a configuration file")
            _export(arg, args[index + 1])
            del args[index : index + 2]
            continue
        if arg.startswith("--config="):
            _export("--config", arg.split("=", 1)[1])
            del args[index]
            continue
        index += 1
    return args


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "v2g_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(_take_config_option(sys.argv))


if __name__ == "__main__":
    main()
