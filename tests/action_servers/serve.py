"""`python -m rasa_sdk`, served by one process: the same arguments, executor and Sanic app.

rasa-sdk's own `run` starts Sanic's worker manager: a main process, a worker and a
multiprocessing helper, about 0.7 s of CPU to start and 0.005 s of CPU each second while idle
(the manager polling its worker). The tests keep an action server per bot for the whole run:
here a server costs one process, about 0.3 s of CPU to start and none while idle.
"""

from __future__ import annotations

import logging
import os
import sys


def main() -> None:
    sys.path.insert(0, os.getcwd())  # the bot's `actions` module, as `python -m` finds it
    from rasa_sdk import utils
    from rasa_sdk.constants import APPLICATION_ROOT_LOGGER_NAME
    from rasa_sdk.endpoint import create_app_for_serve, create_argument_parser
    from rasa_sdk.executor import ActionExecutor

    args = create_argument_parser().parse_args()
    utils.configure_colored_logging(args.loglevel)
    utils.configure_file_logging(
        logging.getLogger(APPLICATION_ROOT_LOGGER_NAME),
        args.log_file,
        args.loglevel,
        args.logging_config_file,
    )
    utils.update_sanic_log_level()
    executor = ActionExecutor()
    executor.register_package(args.actions_module or args.actions)
    app = create_app_for_serve(
        executor, cors_origins=args.cors, auto_reload=args.auto_reload, endpoints=args.endpoints
    )
    host = os.environ.get("SANIC_HOST", "0.0.0.0")
    app.run(host=host, port=args.port, single_process=True, access_log=False, motd=False)


if __name__ == "__main__":
    main()
