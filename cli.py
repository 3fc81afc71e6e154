"""The `botserver` command line: Rasa's verbs and flags (init, train, run, shell, test,
visualize, data, export)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from server import __version__
from server.errors import (
    OPTIONAL_PACKAGES,
    BotServerError,
    InvalidConfig,
    Terminated,
    how_many,
    install_extra,
)

if TYPE_CHECKING:
    from server.brokers.export import Found, ResumePoint
    from server.training.project import Project

logger = logging.getLogger("botserver")
T = TypeVar("T")

DEFAULT_MODELS = "models"


class _Parser(argparse.ArgumentParser):
    """An unknown flag's value is not taken for the command's part: `botserver test --url x`
    says `unrecognized arguments: --url x`, where argparse said `argument what: invalid
    choice: 'x' (choose from 'core', 'nlu')`, naming no flag."""

    _arguments: list[str] = []

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._arguments = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        words = self._arguments
        for index, word in enumerate(words[1:], start=1):
            flag = words[index - 1]
            if (
                f"invalid choice: {word!r} (choose from" in message
                and flag.startswith("-")
                and flag.split("=", 1)[0] not in self._option_string_actions
            ):
                message = _unrecognized(self, [flag, word])
                break
        super().error(message)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' layout and shows defaults, but for a flag whose help says its
    default in words (`(default: config.yml, or Rasa's defaults without it)`), which argparse
    followed with a second, wrong one (`(default: None)`)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default: " in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def version_lines() -> list[str]:
    """`rasa --version`'s lines, in its order (a script reads the Rasa version on the first),
    then botserver's, where Rasa prints a plugin's; the Rasa version is the one it serves."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from server import RASA_COMPAT_VERSION

    try:
        sdk = version("rasa-sdk")
    except PackageNotFoundError:
        sdk = "not installed (`botserver run actions` needs it)"
    return [
        f"Rasa Version      :         {RASA_COMPAT_VERSION}",
        f"Minimum Compatible Version: {RASA_COMPAT_VERSION}",
        f"Rasa SDK Version  :         {sdk}",
        f"Python Version    :         {platform.python_version()}",
        f"Operating System  :         {platform.platform()}",
        f"Python Path       :         {sys.executable}",
        f"botserver Version :         {__version__}",
    ]


class _Version(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        try:
            print("\n".join(version_lines()), flush=True)
        except BrokenPipeError:
            # The reader took what it wanted (`botserver --version | head -1`) and closed the
            # pipe: no traceback, and nothing left for the exit to flush into it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        parser.exit()


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {value}")
        return value

    return parse


class _Paths(argparse.Action):
    """A flag of one or more paths that may be given again: `--data a --data b` reads both.
    (argparse's own `nargs="+"` keeps the last, as Rasa's parser does, so the first paths
    were dropped without a word.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "+")
        super().__init__(*args, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        current = getattr(namespace, self.dest, None)
        given = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, [*given, *values])


def _positive_number(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


DEFAULT_CONFIG = "config.yml"
CONFIG_HELP = f"pipeline and policies (default: {DEFAULT_CONFIG}, or Rasa's defaults without it)"


def _config_file(text: str) -> str:
    """An argparse type: a config file the user named must exist (a typo must not train
    with the default pipeline and policies)."""
    if Path(text).is_dir():
        # Rasa's `test nlu -c DIR` compares the configs in it: not offered here.
        raise argparse.ArgumentTypeError(f"{text!r} is a directory: name one config file in it")
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def _config_path(args: argparse.Namespace) -> Path | None:
    """--config, else config.yml when there is one; None: Rasa's default configuration."""
    if args.config is not None:
        return Path(args.config)
    return Path(DEFAULT_CONFIG) if Path(DEFAULT_CONFIG).is_file() else None


def _seconds(text: str) -> float:
    """An argparse type: a timeout, 0 or more seconds (0 or `inf`: none). Rasa reads an
    integer; a fraction is taken too, `nan` and negatives are refused (`nan` was no timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no timeout) or more seconds, not {text}")
    return value


def _finite_number(text: str) -> float:
    """An argparse type: a finite number (a Unix timestamp)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


# The largest `--offset-timestamps-by-seconds`, either way: about 31,700 years (before, a
# larger one than datetime shows was an OverflowError with a traceback).
MAX_OFFSET_SECONDS = 10**12


def _offset_seconds(text: str) -> int:
    """An argparse type: a whole number of seconds, at most MAX_OFFSET_SECONDS either way."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if abs(value) > MAX_OFFSET_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be between {-MAX_OFFSET_SECONDS} and {MAX_OFFSET_SECONDS} seconds "
            f"(about 31,700 years), not {text}"
        )
    return value


def _fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and below 1, not {text}")
    return value


def _check_output_dir(path: Path, flag: str) -> None:
    """Fails before any work if `path` cannot become a directory we write in."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidConfig(f"{flag} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidConfig(f"{flag} {path}: {existing} is not writable")


DEFAULT_ENDPOINTS = "endpoints.yml"
# `botserver export --skip-unreadable`'s exit code when it passed over a conversation (1: it
# stopped), so that a script tells a complete export from one with holes.
EXIT_SKIPPED = 3


# The exit code of a command stopped by SIGTERM: 128 + 15, what a shell says (`$?`) and
# Kubernetes records of a process SIGTERM ended (Ctrl-C: 130, 128 + 2).
EXIT_TERMINATED = 143


def _run_until_stopped(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, where SIGTERM stops `main` as Ctrl-C does: it is cancelled, its
    `finally` blocks run (a prune gives its locks back, an export says where to go on),
    then Terminated. Before, SIGTERM ended the process at once. A second SIGTERM ends it at
    once, as a second Ctrl-C does."""
    import asyncio  # here: `--help` and the data commands run no event loop

    terminated = False
    handled: list[int] = []  # (SIGTERM, once its handler is set)

    async def run() -> T:
        nonlocal terminated
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            nonlocal terminated
            if terminated:
                loop.remove_signal_handler(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)
            terminated = True
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, stop)
        except (NotImplementedError, RuntimeError):  # (Windows; not the main thread)
            return await main
        handled.append(signal.SIGTERM)
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    try:
        return asyncio.run(run())
    except asyncio.CancelledError:
        if terminated:
            raise Terminated from None
        raise
    finally:  # (asyncio leaves SIG_DFL: a handler of the caller's is its own again)
        if handled and before is not None:
            signal.signal(signal.SIGTERM, before)


def _by(stop: KeyboardInterrupt) -> str:
    """` by SIGTERM` after `stopped`, for a stop that was no Ctrl-C."""
    return " by SIGTERM" if isinstance(stop, Terminated) else ""


def _refuse_a_directory_as_endpoints(path: str) -> None:
    if Path(path).is_dir():
        raise InvalidConfig(
            f"--endpoints {path} is a directory: name the endpoints file in it "
            f"({Path(path) / DEFAULT_ENDPOINTS})"
        )


def _check_endpoints_file(args: argparse.Namespace, needed: bool) -> None:
    """`--endpoints` naming a file that is not there (a typo, a wrong directory): Rasa runs
    with the defaults without a word, and so do `run` and `shell`, with a warning. `needed`:
    the command would act on the default store instead (`prune` deleting from botserver.db):
    refused."""
    path = args.endpoints
    _refuse_a_directory_as_endpoints(path)
    if path == DEFAULT_ENDPOINTS or Path(path).is_file():
        return
    if needed:
        raise InvalidConfig(
            f"--endpoints {path}: no such file; it names the tracker store to prune "
            "(without the flag, endpoints.yml, else botserver.db)"
        )
    logger.warning(
        "--endpoints %s: no such file; running with the default endpoints (no action server, "
        "no event broker, the default tracker store), as Rasa does",
        path,
    )


class _Louder(argparse.Action):
    """-v (counted: -vv) and --debug (2): the last of Rasa's level flags wins, so each undoes
    a --quiet given before, and a -v after --debug means info again."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        count = getattr(namespace, self.dest, None) if _last_level_flag(namespace) == "-v" else 0
        louder = self.const if self.const is not None else (count or 0) + 1
        setattr(namespace, self.dest, louder)
        namespace.quiet = False
        namespace.level_flag = "--debug" if self.const is not None else "-v"


def _last_level_flag(namespace: Any) -> str | None:
    return getattr(namespace, "level_flag", None)


class _Quiet(argparse.Action):
    """--quiet: also undoes a -v or --debug given before."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        namespace.quiet = True
        namespace.verbose = 0
        namespace.level_flag = "--quiet"


def _add_log_flags(p: argparse.ArgumentParser, inherited: bool = False) -> None:
    """The logging flags. `inherited`: a subcommand of a command that has them too (`train
    core`): no defaults of its own, so `botserver train -v core` keeps the `-v`."""
    # Every command parser has these flags; remember it to report unknown flags in its terms.
    p.set_defaults(command_parser=p)
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if inherited else {}
    group = p.add_argument_group("logging")
    group.add_argument(
        "-v",
        "--verbose",
        action=_Louder,
        nargs=0,
        default=argparse.SUPPRESS if inherited else 0,
        help="more logs (-v info, -vv debug, with one line per turn)",
    )
    group.add_argument(
        "--debug",
        action=_Louder,
        nargs=0,
        dest="verbose",
        const=2,
        help="debug logs (as -vv)",
        **unset,
    )
    group.add_argument(
        "--quiet",
        action=_Quiet,
        nargs=0,
        default=argparse.SUPPRESS if inherited else False,
        help="only warnings and errors (the last of -v, --debug and --quiet counts)",
    )
    group.add_argument("--log-file", help="also write logs to this file", **unset)
    group.add_argument(
        "--logging-config-file",
        help="YAML logging configuration (Python's dictConfig schema, as Rasa's); what it "
        "says of the `rasa` logger applies to botserver's",
        **unset,
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS if inherited else "text",
        help="human-readable text or JSON lines",
    )


def _add_syslog_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--use-syslog", action="store_true", help="also send the logs to syslog")
    p.add_argument("--syslog-address", default="localhost", help="syslog host")
    p.add_argument("--syslog-port", type=_int_at_least(1, 65535), default=514, help="syslog port")
    p.add_argument(
        "--syslog-protocol",
        type=_syslog_protocol,
        default="UDP",
        help="syslog transport: UDP (default) or TCP",
    )


class _Domain(argparse.Action):
    """`-d` of `train`: also records that it was given (`train nlu` reads domain.yml, when
    not named, only as far as it can)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.domain_named = True


def _syslog_protocol(text: str) -> str:
    """An argparse type: TCP or UDP in any case. Rasa takes any word and sends by UDP for
    all but `TCP` (its `tcp` too); here `tcp` is TCP, and another word is UDP, said once."""
    protocol = text.upper()
    if protocol not in ("UDP", "TCP"):
        print(
            f"warning: --syslog-protocol {text!r} is neither UDP nor TCP: UDP is used, as in Rasa",
            file=sys.stderr,
        )
        return "UDP"
    return protocol


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=_config_file, help=CONFIG_HELP)
    p.add_argument(
        "-d", "--domain", action=_Domain, default="domain.yml", help="domain file or directory"
    )
    p.add_argument("--data", action=_Paths, default=["data"], help="training data files or dirs")
    p.add_argument("--out", default=DEFAULT_MODELS, help="directory for the model archive")
    p.add_argument("--fixed-model-name", help="name the archive <name>.tar.gz")
    p.add_argument("--force", action="store_true", help="train even if nothing changed")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="train nothing; exit 0 if the newest model is up to date, 1 if the project "
        "needs training, 8 with --force",
    )
    p.add_argument("--signing-key", help="Ed25519 private key (PEM) to sign the archive with")
    p.add_argument(
        "--skip-validation",
        action="store_true",
        help="train without first making the checks of `botserver data validate`",
    )
    p.add_argument(
        "--fail-on-validation-warnings",
        action="store_true",
        help="train nothing (exit 1) when `botserver data validate` would warn",
    )
    p.add_argument(
        "--validation-max-history",
        type=_int_at_least(1),
        help="turns to compare stories over for conflicts, as `data validate --max-history`",
    )


def _add_rasa_training_flags(p: argparse.ArgumentParser, inherited: bool) -> None:
    """Rasa's `rasa train` flags that botserver's training has no use for, or one of its own:
    taken, so that a Rasa team's scripts run (`cmd_train` says what each changes). On `train
    core` and `train nlu` (`inherited`) without defaults, so that a value given before the
    part is kept."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherited else value

    group = p.add_argument_group("Rasa's training flags")
    group.add_argument(
        "--augmentation",
        type=_int_at_least(0),
        default=default(None),
        help="stories glued together for the ML policy to learn from (its augmentation_factor; "
        "default: config.yml's, else 20)",
    )
    group.add_argument(
        "--finetune",
        nargs="?",
        const=True,
        default=default(None),
        metavar="MODEL",
        help="accepted as Rasa's; botserver trains from scratch (in seconds), with a warning",
    )
    group.add_argument(
        "--epoch-fraction",
        type=_positive_number,
        default=default(None),
        help="accepted as Rasa's, with a warning; botserver's components do not train in epochs",
    )
    group.add_argument(
        "--num-threads",
        type=_int_at_least(1),
        default=default(None),
        help="accepted as Rasa's; not used",
    )
    group.add_argument(
        "--persist-nlu-data",
        action="store_true",
        default=default(False),
        help="accepted as Rasa's, with a warning; the archive holds no training data",
    )
    group.add_argument(
        "--debug-plots",
        action="store_true",
        default=default(False),
        help="accepted as Rasa's, with a warning; `botserver visualize` draws the stories",
    )
    group.add_argument(
        "--endpoints", default=default(None), help="accepted as Rasa's; training reads none"
    )


def _warn_about_rasa_training_flags(args: argparse.Namespace) -> None:
    """One warning for each of Rasa's training flags that does nothing here."""
    if args.finetune is not None:
        given = "--finetune" if args.finetune is True else f"--finetune {args.finetune}"
        logger.warning(
            "%s: botserver has no incremental training; the model is trained from scratch "
            "(it takes seconds), not from an earlier one",
            given,
        )
    if args.epoch_fraction is not None:
        logger.warning(
            "--epoch-fraction %s: not used; botserver's components do not train in epochs",
            args.epoch_fraction,
        )
    if args.persist_nlu_data:
        logger.warning(
            "--persist-nlu-data: not used; the model archive holds the trained components, "
            "not the NLU training data"
        )
    if args.debug_plots:
        logger.warning(
            "--debug-plots: story_blocks_connections.html is not written; "
            "`botserver visualize` draws the stories"
        )


def _add_validate_flags(p: argparse.ArgumentParser, inherited: bool) -> None:
    """The flags of `data validate` (and, `inherited`, of `data validate stories`: without
    defaults of its own, so that flags given before `stories` are kept)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherited else value

    p.add_argument("-d", "--domain", default=default("domain.yml"), help="domain file or dir")
    p.add_argument("--data", action=_Paths, default=default(["data"]), help="data files or dirs")
    p.add_argument("-c", "--config", type=_config_file, default=default(None), help=CONFIG_HELP)
    p.add_argument(
        "--fail-on-warnings",
        action="store_true",
        default=default(False),
        help="exit 1 on warnings too",
    )
    p.add_argument(
        "--max-history",
        type=_int_at_least(1),
        default=default(None),
        help="turns to compare stories over for conflicts (the smallest max_history of your "
        "policies); default: whole stories",
    )


def _add_split_flags(
    p: argparse.ArgumentParser, data_help: str, fraction_help: str, out_help: str
) -> None:
    """The flags of `data split nlu` and `data split stories`, as Rasa's."""
    p.add_argument("-u", "--nlu", action=_Paths, default=["data"], help=data_help)
    p.add_argument("--training-fraction", type=_fraction, default=0.8, help=fraction_help)
    p.add_argument("--random-seed", type=int, default=None, help="the same split every time")
    p.add_argument("--out", default="train_test_split", help=out_help)


def _command(sub: Any, name: str, summary: str, *examples: str) -> argparse.ArgumentParser:
    """A (sub)command's parser with its one-line help and usage examples."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, formatter_class=_Formatter, epilog=_examples(*examples)
    )
    return parser


def _group(sub: Any, name: str, summary: str, dest: str, metavar: str) -> Any:
    """A command made of subcommands (`data`, `data split`): its subparsers."""
    parser = sub.add_parser(name, help=summary, formatter_class=_Formatter)
    parser.set_defaults(command_parser=parser)
    return parser.add_subparsers(dest=dest, metavar=metavar)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="botserver",
        description="Train and serve Rasa 3 projects: Rasa's HTTP API, faster and safer.",
        formatter_class=_Formatter,
        epilog=_examples(
            "botserver init --no-prompt && botserver run --enable-api",
            "botserver train",
            "botserver run -m models --enable-api --log-file out.log",
        ),
    )
    parser.add_argument(
        "--version",
        action=_Version,
        nargs=0,
        default=argparse.SUPPRESS,
        help="print the versions and exit, as Rasa's",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # init
    p = sub.add_parser(
        "init",
        help="write a starter project and train it",
        formatter_class=_Formatter,
        epilog=_examples("botserver init --no-prompt --init-dir mybot"),
    )
    p.add_argument("--no-prompt", action="store_true", help="don't ask; use the defaults")
    p.add_argument("--init-dir", default=".", help="where to write the project")
    _add_log_flags(p)

    # train
    p = sub.add_parser(
        "train",
        help="train a model from config, domain and data",
        formatter_class=_Formatter,
        epilog=_examples(
            "botserver train",
            "botserver train --config config.yml --domain domain.yml --data data/",
            "botserver train --fixed-model-name mybot --force",
            "botserver train nlu --config config.yml --nlu data/nlu.yml",
            "botserver train core -d domain.yml -s data/stories.yml data/rules.yml",
        ),
    )
    _add_train_flags(p)
    _add_rasa_training_flags(p, inherited=False)
    _add_log_flags(p)
    tsub = p.add_subparsers(dest="train_what", metavar="WHAT")
    pc = _command(
        tsub,
        "core",
        "train the dialogue policies only (no NLU: messages are /intent{...})",
        "botserver train core",
        "botserver train core -d domain.yml -s data/stories.yml data/rules.yml --out models",
        "botserver train core --fixed-model-name dialogue --force",
    )
    pc.add_argument("-s", "--stories", action=_Paths, default=["data"], help="stories and rules")
    # Flags `train` has too: no defaults here, so a value given before `core` is kept.
    unset = argparse.SUPPRESS
    pc.add_argument("-d", "--domain", default=unset, help="domain file or dir (domain.yml)")
    pc.add_argument("-c", "--config", type=_config_file, default=unset, help=CONFIG_HELP)
    pc.add_argument("--out", default=unset, help=f"directory for the archive ({DEFAULT_MODELS})")
    pc.add_argument("--fixed-model-name", default=unset, help="name the archive <name>.tar.gz")
    pc.add_argument("--force", action="store_true", default=unset, help="train even if unchanged")
    _add_rasa_training_flags(pc, inherited=True)
    _add_log_flags(pc, inherited=True)
    pn = tsub.add_parser("nlu", help="train the NLU pipeline only", formatter_class=_Formatter)
    pn.add_argument("-c", "--config", type=_config_file, default=unset, help=CONFIG_HELP)
    pn.add_argument("-u", "--nlu", action=_Paths, default=["data"], help="NLU data files or dirs")
    pn.add_argument(
        "-d",
        "--domain",
        action=_Domain,
        default=unset,
        help="domain file or dir whose retrieval responses the ResponseSelector answers with "
        "(domain.yml when there is one)",
    )
    pn.add_argument("--out", default=unset, help=f"directory for the archive ({DEFAULT_MODELS})")
    pn.add_argument("--fixed-model-name", default=unset, help="name the archive <name>.tar.gz")
    pn.add_argument("--force", action="store_true", default=unset, help="train even if unchanged")
    _add_rasa_training_flags(pn, inherited=True)
    _add_log_flags(pn, inherited=True)

    # run
    p = sub.add_parser(
        "run",
        help="serve a model over HTTP and channels",
        formatter_class=_Formatter,
        epilog=_examples(
            "botserver run -m models --enable-api --log-file out.log",
            "botserver run --enable-api --auth-token thisismysecret",
            "botserver run --enable-api --jwt-secret thisismysecret",
            "botserver run --endpoints endpoints.yml --workers 2",
            "botserver run actions --port 5055   (rasa-sdk's action server, as rasa run actions)",
        ),
    )
    p.add_argument(
        "-m",
        "--model",
        default=DEFAULT_MODELS,
        help="model archive, or a directory whose newest archive is used",
    )
    p.add_argument(
        "model_as_positional_argument",
        nargs="?",
        metavar="MODEL",
        help="the model as -m gives it (`botserver run models/mybot.tar.gz`, as Rasa's)",
    )
    p.add_argument("--enable-api", action="store_true", help="serve Rasa's HTTP API")
    p.add_argument(
        "-p", "--port", type=_int_at_least(1, 65535), default=5005, help="port to listen on"
    )
    p.add_argument("-i", "--interface", default="0.0.0.0", help="address to listen on")
    p.add_argument(
        "--cors",
        nargs="*",
        default=None,
        help="allowed origin(s), or '*'; one holding * \\ ] or ? is a regular expression "
        "(over the whole origin), as in Rasa",
    )
    p.add_argument(
        "-t",
        "--auth-token",
        help="require ?token=<this> on API routes (env BOTSERVER_AUTH_TOKEN)",
    )
    p.add_argument(
        "--jwt-secret",
        help="JWT secret (HS*) or public key (RS*/ES*), or a file holding it "
        "(env BOTSERVER_JWT_SECRET)",
    )
    p.add_argument("--jwt-method", default="HS256", help="JWT algorithm")
    p.add_argument("--jwt-private-key", help="accepted for compatibility with Rasa")
    p.add_argument(
        "--jwt-audience",
        action="append",
        help="accept JWTs whose 'aud' claim names this audience, and only those (repeatable; "
        "env BOTSERVER_JWT_AUDIENCE, comma-separated); without it a JWT with 'aud' is refused",
    )
    p.add_argument("--endpoints", default=DEFAULT_ENDPOINTS, help="endpoints configuration")
    p.add_argument("--credentials", default=None, help="channel credentials")
    p.add_argument("--connector", help="serve only this channel")
    p.add_argument("--remote-storage", help="aws, gcs or azure: fetch -m from there")
    p.add_argument(
        "--response-timeout",
        type=_seconds,
        default=3600,
        help="seconds before a request is answered with a timeout error",
    )
    p.add_argument(
        "--request-timeout",
        type=_seconds,
        default=300,
        help="accepted as Rasa's; as in Rasa it does nothing for the server (only `rasa shell` "
        "read it)",
    )
    p.add_argument(
        "--request-max-size",
        type=_int_at_least(0),
        default=None,
        help="largest request body accepted, in bytes (0: no limit) (default: 10485760, 10 MiB)",
    )
    p.add_argument("--ssl-certificate", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    p.add_argument("--ssl-ca-file", help="CA bundle client certificates are checked against")
    p.add_argument("--ssl-password", help="password of the encrypted --ssl-keyfile")
    p.add_argument(
        "--workers",
        type=_int_at_least(1),
        default=None,
        help="server processes on one port (default: Rasa's SANIC_WORKERS, else 1)",
    )
    p.add_argument("--verify-key", help="Ed25519 public key: refuse unsigned models")
    p.add_argument(
        "--no-metrics",
        action="store_true",
        help="don't serve /metrics (it is open, like Rasa's health route)",
    )
    _add_syslog_flags(p)
    _add_log_flags(p)

    # shell
    p = sub.add_parser(
        "shell",
        help="talk to the bot in the terminal",
        formatter_class=_Formatter,
        epilog=_examples(
            "botserver shell",
            "botserver shell -m models/mybot.tar.gz",
            "botserver shell nlu   (print each message's intent and entities, as JSON)",
        ),
    )
    p.add_argument(
        "what",
        nargs="?",
        choices=("nlu",),
        default=None,
        help="nlu: print each message's parse (intent, entities) instead of talking",
    )
    p.add_argument(
        "-m", "--model", default=DEFAULT_MODELS, help="model archive, or a directory of them"
    )
    p.add_argument(
        "--endpoints",
        default=DEFAULT_ENDPOINTS,
        help="action server, NLG and stores (without a tracker_store: in memory)",
    )
    p.add_argument(
        "--sender",
        "--conversation-id",
        default=None,
        help="conversation id (default: a new one)",
    )
    p.add_argument("--remote-storage", help="aws, gcs or azure: fetch -m from there")
    p.add_argument("--verify-key", help="Ed25519 public key: refuse unsigned models")
    for flag in ("--request-timeout", "--response-timeout"):
        p.add_argument(
            flag,
            type=_seconds,
            default=None,
            help="accepted as Rasa's; the shell talks to the bot in process, with no timeout",
        )
    _add_syslog_flags(p)
    _add_log_flags(p)

    # test
    p = sub.add_parser(
        "test",
        help="evaluate a model on test stories and NLU data",
        formatter_class=_Formatter,
        epilog=_examples(
            "botserver test",
            "botserver test core --stories tests/ -m models --out results/",
            "botserver test nlu --nlu data/nlu.yml -m models --out results/",
            "botserver test nlu --nlu data/ --cross-validation --folds 5",
            "botserver test core --fail-on-prediction-errors",
            "botserver test core --e2e",
        ),
    )
    p.add_argument("what", nargs="?", choices=("core", "nlu"), default=None)
    p.add_argument(
        "-m", "--model", default=DEFAULT_MODELS, help="model archive, or a directory of them"
    )
    p.add_argument(
        "-s",
        "--stories",
        default=None,
        help="test stories file or directory (default: tests; without a tests folder, the "
        "stories of data, with a warning; `botserver test`: its test_*.yml ones, end to end, "
        "where there are any)",
    )
    p.add_argument("-u", "--nlu", default="data", help="NLU test data")
    p.add_argument("--out", default="results", help="directory for the reports and plots")
    p.add_argument("-c", "--config", type=_config_file, help=CONFIG_HELP)
    p.add_argument(
        "--endpoints", default=DEFAULT_ENDPOINTS, help="accepted as Rasa's; the test reads none"
    )
    p.add_argument(
        "--cross-validation",
        action="store_true",
        help="cross-validate the NLU data with the pipeline of -c",
    )
    p.add_argument(
        "-f", "--folds", type=_int_at_least(2), default=5, help="folds of --cross-validation"
    )
    p.add_argument(
        "--fail-on-prediction-errors",
        action="store_true",
        help="exit 1 when a test story fails (after writing the reports), for CI",
    )
    p.add_argument(
        "--e2e",
        "--end-to-end",
        action="store_true",
        help="test core: also compare the intent and entities the NLU finds in each test "
        "story's user text (`botserver test` always does, as `rasa test`; `test core` "
        "compares only the actions by default, as Rasa's)",
    )
    p.add_argument(
        "--max-stories", type=_int_at_least(1), help="test only the first N test stories"
    )
    p.add_argument(
        "-d",
        "--domain",
        default="domain.yml",
        help="accepted as Rasa's; the domain is the one the model was trained with",
    )
    p.add_argument(
        "--no-plot", action="store_true", help="don't draw the confusion matrices and histogram"
    )
    p.add_argument(
        "--successes",
        action="store_true",
        help="also write intent_successes.json and successful_test_stories.yml",
    )
    p.add_argument(
        "--no-errors",
        action="store_true",
        help="don't write intent_errors.json and failed_test_stories.yml",
    )
    p.add_argument(
        "--no-warnings", action="store_true", help="don't write stories_with_warnings.yml"
    )
    _add_log_flags(p)

    # visualize
    p = _command(
        sub,
        "visualize",
        "draw the stories as a graph of intents and actions (HTML or Graphviz DOT)",
        "botserver visualize",
        "botserver visualize -d domain.yml -s data/stories.yml --out stories.html",
        "botserver visualize -u data/nlu.yml --max-history 3",
        "botserver visualize --out graph.dot && dot -Tpng graph.dot -o graph.png",
    )
    p.add_argument("-d", "--domain", default="domain.yml", help="domain file or directory")
    p.add_argument("-s", "--stories", action=_Paths, default=["data"], help="stories files or dirs")
    p.add_argument(
        "-c",
        "--config",
        type=_config_file,
        help=f"read for its imports (default: {DEFAULT_CONFIG} when there is one)",
    )
    p.add_argument(
        "--out",
        default="graph.html",
        help="file to write: an HTML page, or Graphviz DOT when it ends in .dot",
    )
    p.add_argument(
        "--max-history",
        type=_int_at_least(1),
        default=2,
        help="steps that must match for two story steps to be drawn as one node",
    )
    p.add_argument(
        "-u",
        "--nlu",
        action=_Paths,
        default=None,
        help="NLU data files or dirs: show an example message instead of each intent's name",
    )
    _add_log_flags(p)

    # data validate
    dsub = _group(sub, "data", "work with training data", "data_command", "ACTION")
    pv = _command(
        dsub,
        "validate",
        "check a project for errors and inconsistencies",
        "botserver data validate",
        "botserver data validate -d domain.yml --data data/",
        "botserver data validate --max-history 5 --fail-on-warnings",
    )
    _add_validate_flags(pv, inherited=False)
    _add_log_flags(pv)
    pvs = pv.add_subparsers(dest="validate_what", metavar="WHAT")
    pvst = _command(
        pvs,
        "stories",
        "check only the stories' structure (conflicts), as rasa data validate stories",
        "botserver data validate stories --max-history 5 --fail-on-warnings",
    )
    _add_validate_flags(pvst, inherited=True)
    _add_log_flags(pvst, inherited=True)
    pss = _group(dsub, "split", "split training data", "split_what", "WHAT")
    psn = _command(
        pss,
        "nlu",
        "split NLU data into training and test files, per intent",
        "botserver data split nlu",
        "botserver data split nlu -u data/nlu.yml --training-fraction 0.8 --random-seed 1",
        "botserver test nlu -u train_test_split/test_data.yml",
    )
    _add_split_flags(
        psn,
        "NLU data files or dirs",
        "share of each intent's examples for training",
        "directory for training_data.yml, test_data.yml",
    )
    _add_log_flags(psn)
    pst = _command(
        pss,
        "stories",
        "split each stories file's stories into training and test files",
        "botserver data split stories",
        "botserver data split stories -u data/stories.yml --training-fraction 0.8 --random-seed 1",
        "botserver test core -s train_test_split/test_stories.yml",
    )
    _add_split_flags(
        pst,
        "stories files or dirs",
        "share of each file's stories for training",
        "directory for train_<file>, test_<file>",
    )
    _add_log_flags(pst)
    pm = _command(
        dsub,
        "migrate",
        "rewrite a Rasa 2 domain in Rasa 3's format (slot mappings)",
        "botserver data migrate",
        "botserver data migrate -d domain.yml --out new_domain.yml",
        "botserver data migrate -d domain/ --out new_domain/",
    )
    pm.add_argument("-d", "--domain", default="domain.yml", help="domain file or directory")
    pm.add_argument(
        "--out",
        default=None,
        help="where to write it (default: new_domain.yml, or new_domain/ for a directory, "
        "beside the domain)",
    )
    _add_log_flags(pm)
    pcs = _group(dsub, "convert", "convert training data between formats", "convert_what", "WHAT")
    pcn = _command(
        pcs,
        "nlu",
        "convert NLU data between Rasa's JSON format and YAML",
        "botserver data convert nlu --data demo-rasa.json --out data/nlu.yml -f yaml",
        "botserver data convert nlu --data data/ --out converted_data -f json",
    )
    pcn.add_argument(
        "-f", "--format", choices=("yaml", "json"), default="yaml", help="the format to write"
    )
    pcn.add_argument(
        "--data", action=_Paths, default=["data"], help="NLU data files or dirs (.json, .yml)"
    )
    pcn.add_argument(
        "--out",
        default="converted_data",
        help="file to write (.yml, .yaml, .json), or a directory for <data name>.yml|.json",
    )
    pcn.add_argument("-l", "--language", default="en", help="accepted as Rasa's; not used")
    _add_log_flags(pcn)

    # tracker retention
    p = sub.add_parser(
        "prune",
        help="delete conversations older than an age",
        formatter_class=_Formatter,
        epilog=_examples("botserver prune --older-than-days 90"),
    )
    p.add_argument(
        "--older-than-days",
        type=_positive_number,
        required=True,
        help="delete conversations whose last event is older than this many days "
        "(default: none, it is required)",
    )
    p.add_argument(
        "--endpoints",
        default=DEFAULT_ENDPOINTS,
        help="the tracker store to prune (without a tracker_store section: botserver.db)",
    )
    _add_log_flags(p)

    # export
    p = _command(
        sub,
        "export",
        "publish the tracker store's events to the event broker",
        "botserver export",
        "botserver export --endpoints prod-endpoints.yml --minimum-timestamp 1700000000",
        "botserver export --conversation-ids ana,bob --maximum-timestamp 1700086400.5",
    )
    p.add_argument(
        "--endpoints",
        default="endpoints.yml",
        help="its tracker_store is read, its event_broker published to",
    )
    p.add_argument(
        "--minimum-timestamp",
        type=_finite_number,
        help="publish events from this Unix time on (inclusive)",
    )
    p.add_argument(
        "--maximum-timestamp",
        type=_finite_number,
        help="publish events before this Unix time (exclusive)",
    )
    p.add_argument(
        "--offset-timestamps-by-seconds",
        type=_offset_seconds,
        help="move the timestamps of the published events by this many seconds (the range "
        "above is of the stored ones; the tracker store is unchanged)",
    )
    p.add_argument(
        "--conversation-ids", help="comma-separated conversation ids (default: every one)"
    )
    p.add_argument(
        "--resume-from",
        type=_resume_point,
        metavar="ID@TIMESTAMP[#N]",
        help="go on with an interrupted export: from this conversation (those before it are "
        "done) and its events from this stored time, but the first N of that time (the error "
        "line of the export names it)",
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="pass over a conversation the tracker store cannot read (not JSON, not a "
        "tracker), naming each, and publish the others; the exit code is then "
        f"{EXIT_SKIPPED} (default: the export stops at it)",
    )
    _add_log_flags(p)
    return parser


def _resume_point(value: str) -> Any:
    """`--resume-from ID@TIMESTAMP[#N]` (an id may hold `@`: the last one splits; `#N`: the
    first N events of that time are done)."""
    from server.brokers.export import ResumePoint

    sender_id, at, point = value.rpartition("@")
    stamp, hash_sign, skipped = point.partition("#")
    try:
        timestamp = _finite_number(stamp) if at else None
    except argparse.ArgumentTypeError:
        timestamp = None
    skip = int(skipped) if skipped.isdigit() and skipped.isascii() else None
    if timestamp is None or (hash_sign and skip is None):
        raise argparse.ArgumentTypeError(
            "must be a conversation id, '@' and a Unix time, then '#' and a count of its events "
            f"done if some were (ana@1700000256.1, ana@1700000256.1#2), not {value!r}"
        )
    return ResumePoint(sender_id, timestamp, skip or 0)


# -- commands ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    """Rich progress bars on stderr, one per training stage, each closed when the next starts."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    current: list[Any] = []

    def stage(message: str) -> None:
        if current:
            progress.update(current[-1], total=1, completed=1)
        current.append(progress.add_task(message, total=None))

    with progress:
        yield stage
        if current:
            progress.update(current[-1], total=1, completed=1)


def _train_dry_run(args: argparse.Namespace) -> int:
    from server.training.project import load_project
    from server.training.train import (
        DRY_RUN_FORCED,
        DRY_RUN_UP_TO_DATE,
        check_training_data,
        dry_run,
        set_augmentation,
    )

    config, domain, data = _train_inputs(args)
    # A missing domain is read as the training reads it: an error unless validation is
    # skipped, then an empty domain (an NLU-only model).
    project = load_project(config, domain, data, missing_domain_is_empty=args.skip_validation)
    check_training_data(project, data)  # as `rasa train --dry-run`: no code, an error
    set_augmentation(project, args.augmentation)
    code, existing = dry_run(project, Path(args.out), args.fixed_model_name, args.force)
    if code == DRY_RUN_UP_TO_DATE:
        print(f"No training required: {existing} was trained from these files.")
    elif code == DRY_RUN_FORCED:
        print("The training was forced (--force).")
    else:
        print("The model needs to be retrained.")
    return code


def _train_inputs(args: argparse.Namespace) -> tuple[Path | None, Path, list[Path]]:
    """config (None: Rasa's defaults), domain and data, from the flags."""
    return _config_path(args), Path(args.domain), [Path(p) for p in args.data]


def _valid_for_training(args: argparse.Namespace) -> tuple[bool, Project | None, list[str]]:
    """As `rasa train`: the checks of `data validate` first; an error is printed as `data
    validate` prints it, and nothing is trained. Rasa also stops on a few of its *warnings*
    (a slot mapping conditioned on a form that lacks it); botserver prints them and trains,
    saying Rasa would not (`--fail-on-validation-warnings` stops on them). With the project
    validation read, for training to train without reading the files again, and the
    warnings printed, for training not to print them again."""
    from server.training.validation import validate_project

    config, domain, data = _train_inputs(args)
    report = validate_project(
        config, domain, data, args.validation_max_history, empty_domain_stops=True
    )
    strict = args.fail_on_validation_warnings
    if not (report.errors or report.failing_warnings or (strict and report.warnings)):
        return True, report.project, []
    printed = [*report.config_warnings, *report.unchecked_warnings, *report.warnings]
    for warning in printed:
        print(f"warning: {warning}", file=sys.stderr)
    from server.logs import command_failed

    for error in report.errors:
        command_failed(str(error))
    if not report.errors and not strict:
        print(
            f"warning: {len(report.failing_warnings)} of these warnings "
            f"{'makes' if len(report.failing_warnings) == 1 else 'make'} `rasa train` "
            '(3.5+) stop with "Project validation completed with errors."; botserver '
            "trains (--fail-on-validation-warnings stops, as Rasa does).",
            file=sys.stderr,
        )
        return True, report.project, printed
    reasons = [how_many(len(report.errors), "error")] if report.errors else []
    if strict and report.warnings:
        warnings = how_many(len(report.warnings), "warning")
        reasons.append(f"{warnings} with --fail-on-validation-warnings")
    # (--skip-validation trains past the checks, not past a file training cannot read)
    anyway = "" if report.training_stops else ", or train anyway with --skip-validation"
    command_failed(
        f"Project validation completed with errors ({'; '.join(reasons)}): nothing "
        f"was trained. Correct them{anyway}."
    )
    return False, None, printed


def _nlu_domain(domain: str) -> Path | None:
    """The domain `train nlu` reads: the one named, or domain.yml when there is one."""
    if Path(domain).exists():
        return Path(domain)
    if domain != "domain.yml":
        raise InvalidConfig(f"--domain {domain}: no such file or directory")
    return None


def _check_whole_model_flags(args: argparse.Namespace, what: str) -> None:
    """`botserver train --dry-run core`: a flag of the whole training, given before the part
    to train, which would ignore it."""
    given = [
        flag
        for flag, value, default in (
            ("--dry-run", args.dry_run, False),
            ("--signing-key", args.signing_key, None),
            ("--skip-validation", args.skip_validation, False),
            ("--fail-on-validation-warnings", args.fail_on_validation_warnings, False),
            ("--validation-max-history", args.validation_max_history, None),
            ("--data", args.data, ["data"]),
        )
        if value != default and value is not None
    ]
    if given:
        reads = "-s/--stories" if what == "core" else "-u/--nlu"
        raise InvalidConfig(
            f"{', '.join(given)} applies to `botserver train` (the whole model), not to "
            f"`botserver train {what}`, which reads {reads}"
        )


def cmd_train(args: argparse.Namespace) -> int:
    from server.training.train import train, train_core, train_nlu

    what = getattr(args, "train_what", None)
    part = args.finetune if args.finetune in ("core", "nlu") else None
    if part is not None and not Path(part).exists():
        args.command_parser.error(
            f"`{part}` after --finetune was read as the model to fine-tune (--finetune takes "
            f"an optional model), and there is no file {part}; to train `{part}`, name it "
            f"first: botserver train {part} --finetune"
        )
    _warn_about_rasa_training_flags(args)
    if what is None and args.dry_run:
        return _train_dry_run(args)
    if what is not None:
        _check_whole_model_flags(args, what)
    _check_output_dir(Path(args.out), "--out")
    validated: Project | None = None
    said: list[str] = []
    if what is None and not args.skip_validation:
        valid, validated, said = _valid_for_training(args)
        if not valid:
            return 1
    with _progress() as say:
        if what == "core":
            result = train_core(
                _config_path(args),
                Path(args.domain),
                [Path(p) for p in args.stories],
                Path(args.out),
                args.fixed_model_name,
                args.force,
                progress=say,
                augmentation=args.augmentation,
            )
        elif what == "nlu":
            result = train_nlu(
                _config_path(args),
                [Path(p) for p in args.nlu],
                Path(args.out),
                args.fixed_model_name,
                args.force,
                progress=say,
                domain_path=_nlu_domain(args.domain),
                domain_named=getattr(args, "domain_named", False),
            )
        else:
            result = train(
                *_train_inputs(args),
                Path(args.out),
                args.fixed_model_name,
                args.force,
                Path(args.signing_key) if args.signing_key else None,
                progress=say,
                augmentation=args.augmentation,
                project=validated,
                said=said,
            )
    if result.skipped:
        print(
            f"Nothing changed since the last training; the model is {result.path}. "
            "Use --force to retrain."
        )
    else:
        print(f"Your model is trained and saved at '{result.path}' ({result.seconds:.2f} s).")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from server.logs import command_failed
    from server.training.validation import run_validate

    args.config = _config_path(args)
    stories_only = getattr(args, "validate_what", None) == "stories"
    return run_validate(args, stories_only=stories_only, error=command_failed)


def cmd_split_nlu(args: argparse.Namespace) -> int:
    from server.nlu.training_data import NLUTrainingData
    from server.training.nlu_json import read_nlu_json
    from server.training.nlu_split import write_split
    from server.training.nlu_yaml import read_nlu_file
    from server.training.project import data_files, nlu_json_files

    out = Path(args.out)
    _check_output_dir(out, "--out")
    files = [f for f in data_files(args.nlu) if _holds_nlu(f)]
    json_parts = [read_nlu_json(f) for f in nlu_json_files(args.nlu)]
    data = NLUTrainingData.merge([*map(read_nlu_file, files), *json_parts])
    if not data.examples:
        raise InvalidConfig(f"no NLU examples in {', '.join(args.nlu)}")
    *first, last = write_split(data, out, args.training_fraction, args.random_seed)
    print(f"Wrote {', '.join(map(str, first))} and {last}.")
    return 0


def cmd_split_stories(args: argparse.Namespace) -> int:
    from server.training.stories_split import plan_stories_split

    out = Path(args.out)
    _check_output_dir(out, "--out")
    splits = plan_stories_split(args.nlu, out, args.training_fraction, args.random_seed)
    out.mkdir(parents=True, exist_ok=True)
    for split in splits:
        split.write()
        print(
            f"{split.source}: {how_many(len(split.train), 'story', 'stories')} to "
            f"{split.train_path}, "
            f"{len(split.test)} to {split.test_path}."
        )
    return 0


def cmd_convert_nlu(args: argparse.Namespace) -> int:
    from server.training.nlu_convert import convert_nlu, output_path

    out = Path(args.out)
    _check_output_dir(output_path(out, Path(args.data[0]), args.format).parent, "--out")
    converted = convert_nlu(args.data, out, args.format)
    print(f"Wrote {how_many(converted.examples, 'example')} to {converted.path}.")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from server.training.domain_migration import plan_migration

    migration = plan_migration(Path(args.domain), Path(args.out) if args.out else None)
    for warning in migration.warnings:
        logger.warning(warning)
    migration.write()
    print(
        f"Migrated {migration.domain} to {migration.out}; the original is copied to "
        f"{migration.backup}."
    )
    return 0


def _holds_nlu(path: Path) -> bool:
    from server.training.yaml_io import read_yaml_file

    content = read_yaml_file(path)
    return isinstance(content, dict) and "nlu" in content


def cmd_init(args: argparse.Namespace) -> int:
    from server.training.starter import write_starter_project

    target = Path(args.init_dir)
    _check_output_dir(target, "--init-dir")
    if not args.no_prompt and sys.stdin.isatty():
        answer = input(f"Create a new project in '{target.resolve()}'? [Y/n] ").strip().lower()
        if answer not in ("", "y", "yes"):
            print("Nothing written.")
            return 0
    written = write_starter_project(target)
    print(f"Wrote {len(written)} files to {target.resolve()}.")
    from server.training.train import train

    with _progress() as say:
        result = train(
            target / "config.yml",
            target / "domain.yml",
            [target / "data"],
            target / DEFAULT_MODELS,
            progress=say,
        )
    print(
        f"Trained {result.path}. Start the bot with: "
        f"cd {args.init_dir} && botserver run --enable-api"
    )
    return 0


def _warn_about_rasas_sanic_backlog() -> None:
    """Rasa's server reads SANIC_BACKLOG; botserver's does not: said once."""
    backlog = os.environ.get("SANIC_BACKLOG")
    if backlog is not None:
        logger.warning(
            "SANIC_BACKLOG=%s is Rasa's (its Sanic server's) and not read here: botserver's "
            "server keeps up to 2048 connections waiting to be accepted",
            backlog,
        )


def cmd_run(args: argparse.Namespace) -> int:
    from server.run_flags import check_run_flags

    _check_endpoints_file(args, needed=False)
    # Before the server's imports (some 2 s of CPU): a wrong value is said at once.
    check_run_flags(args)
    from server.api.collector import collected_once_at_start, gc_thresholds
    from server.config import read_endpoints
    from server.run_flags import check_a_model_can_come
    from server.setting_values import graceful_shutdown_seconds, max_predictions

    # The server's settings from the environment too (a wrong BOTSERVER_GC_THRESHOLDS was
    # taken once a model loaded; the others were a traceback from the server's imports).
    gc_thresholds()
    graceful_shutdown_seconds()
    max_predictions()
    # And a model that cannot come, as `rasa run` (before, the server's imports and stores
    # came first: 1.1 s of CPU before the error, docs/benchmarks.md).
    endpoints = read_endpoints(args.endpoints)
    check_a_model_can_come(args, endpoints)
    with collected_once_at_start():  # from the first of the server's imports
        from server.api.runner import run_server

        _warn_about_rasas_sanic_backlog()
        return run_server(args, endpoints)


def cmd_shell(args: argparse.Namespace) -> int:
    from server.run_flags import check_run_flags

    _check_endpoints_file(args, needed=False)
    check_run_flags(args)  # before the server's imports, as `run`
    from server.config import read_endpoints
    from server.run_flags import check_a_shell_model_can_come

    endpoints = read_endpoints(args.endpoints)
    check_a_shell_model_can_come(args, endpoints)  # and a missing model, as `run`
    from server.api.runner import check_model_source
    from server.channels.console import run_shell, still_reading

    check_model_source(args)
    import asyncio

    try:
        return asyncio.run(
            run_shell(
                args.model if args.remote_storage else Path(args.model),
                endpoints,
                args.sender,
                nlu_only=args.what == "nlu",
                remote_storage=args.remote_storage,
                verify_key=Path(args.verify_key) if args.verify_key else None,
            )
        )
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the stores are closed already
        if still_reading():
            # Input from a pipe (`docker run -i`, a script): the thread reading it holds
            # stdin's lock, and the interpreter's shutdown aborted on it (SIGABRT, a "Fatal
            # Python error" in place of exit 130 or 143). Nothing is left to clean up.
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError):  # a reader gone: exit all the same
                    stream.flush()
            logging.shutdown()
            os._exit(EXIT_TERMINATED if isinstance(exc, Terminated) else 130)
        raise


def cmd_test(args: argparse.Namespace) -> int:
    from server.training.evaluate import run_test

    _check_output_dir(Path(args.out), "--out")
    args.config = _config_path(args)
    return run_test(args)


def cmd_visualize(args: argparse.Namespace) -> int:
    from server.nlu.training_data import NLUTrainingData
    from server.training.graph_render import graph_dot, graph_html
    from server.training.nlu_yaml import read_nlu_file
    from server.training.project import data_files, load_project
    from server.training.story_graph import build_story_graph, example_messages

    out = Path(args.out)
    _check_output_dir(out.parent, "--out")
    project = load_project(_config_path(args), Path(args.domain), [Path(p) for p in args.stories])
    messages = None
    if args.nlu:
        nlu = NLUTrainingData.merge(
            [read_nlu_file(f) for f in data_files(args.nlu) if _holds_nlu(f)]
        )
        messages = example_messages(nlu.examples)
    stories = project.training_stories()
    if not any(not story.is_rule for story in stories):
        logger.warning(
            "No stories in %s: the graph shows only START and END (rules are not drawn).",
            ", ".join(args.stories),
        )
    graph = build_story_graph(stories, args.max_history, messages)
    drawn = graph_dot(graph) if out.suffix.lower() == ".dot" else graph_html(graph)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(drawn, encoding="utf-8")
    nodes, edges = how_many(len(graph.nodes), "node"), how_many(len(graph.edges), "edge")
    print(f"Wrote the graph of {nodes} and {edges} to {out}.")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from server.config import read_endpoints
    from server.errors import StoreFailed
    from server.logs import command_failed
    from server.trackers.factory import (
        DEFAULT_TRACKER_STORE,
        create_lock_store,
        create_tracker_store,
    )
    from server.trackers.retention import Pruned, delete_conversations_older_than

    _check_endpoints_file(args, needed=True)
    endpoints = read_endpoints(args.endpoints)
    config = endpoints.get("tracker_store") or DEFAULT_TRACKER_STORE
    if config is DEFAULT_TRACKER_STORE and not Path(config["db"]).exists():
        # (Else the store's own error names a section of a file that may not be there.)
        raise InvalidConfig(
            f"SQLite database '{config['db']}' ({Path(config['db']).absolute()}) does not "
            f"exist: without a tracker_store section in {args.endpoints}, the prune is of the "
            "botserver.db of the working directory, which botserver run makes there"
        )

    async def prune() -> Pruned:
        # The serving processes' locks, when they are shared (an in-memory lock is not).
        locks = create_lock_store(endpoints.get("lock_store"), args.endpoints)
        shared = None if locks.process_local else locks
        store = create_tracker_store(config, args.endpoints, create_missing=False)
        try:
            return await delete_conversations_older_than(
                store, args.older_than_days * 86400, shared, gone.append
            )
        finally:
            await store.close()
            await locks.close()

    gone: list[int] = []  # each batch's deletions, as they are made
    # (Those deleted stay deleted: the same command goes on with the rest.)
    so_far = "; botserver prune again deletes the rest"
    try:
        pruned = _run_until_stopped(prune())
    except KeyboardInterrupt as exc:
        command_failed(
            f"stopped{_by(exc)} (after deleting {how_many(sum(gone), 'conversation')}){so_far}"
        )
        raise
    except BotServerError as exc:
        if not sum(gone):
            raise
        raise StoreFailed(
            f"{exc} (after deleting {how_many(sum(gone), 'conversation')}){so_far}"
        ) from exc
    print(f"Deleted {how_many(pruned.deleted, 'conversation')}.")
    if not pruned.lost:
        return 0
    # Exit code 1: a lock lost while held means Redis lost its data or the prune stalled for
    # lock_lifetime, which a cron job's owner should look at. The prune is safe to run again.
    shown = ", ".join(f"'{conversation_id}'" for conversation_id in pruned.lost[:10])
    more = f" and {len(pruned.lost) - 10} more" if len(pruned.lost) > 10 else ""
    lost = how_many(len(pruned.lost), "conversation")
    # (A lock found lost while its batch's delete ran was found too late to skip it.)
    if len(pruned.lost) == 1:
        said = f"the lock of {lost} was found lost while the prune held it; the prune left it"
        whose = "its"
    else:
        said = f"the locks of {lost} were found lost while the prune held them; the prune left them"
        whose = "their"
    command_failed(
        f"{said} alone from then on, unless {whose} delete had gone out already (another "
        f"process may be in a turn there): {shown}{more}; see the log above"
    )
    return 1


def cmd_export(args: argparse.Namespace) -> int:
    from server.brokers import export as exporting
    from server.brokers.export import Found, Progress, selected_events
    from server.brokers.factory import create_event_broker
    from server.config import read_endpoints
    from server.errors import CorruptConversation, ExportInterrupted
    from server.logs import command_failed
    from server.trackers.factory import create_tracker_store

    low, high = args.minimum_timestamp, args.maximum_timestamp
    if low is not None and high is not None and high < low:
        raise InvalidConfig(f"--maximum-timestamp {high} is smaller than --minimum-timestamp {low}")
    if low is not None and high == low:
        # (Rasa reads the whole store to find nothing in it.)
        raise InvalidConfig(
            f"--maximum-timestamp {high} is not above --minimum-timestamp {low}: no time is in "
            "that range (the maximum is left out)"
        )
    ids = None
    if args.conversation_ids is not None:
        ids = [i.strip() for i in args.conversation_ids.split(",") if i.strip()]
        if not ids:
            # An empty variable (`--conversation-ids "$IDS"`) exported every conversation, as
            # Rasa's does.
            raise InvalidConfig(
                f"--conversation-ids {args.conversation_ids!r} names no conversation (without "
                "the flag, every one is exported)"
            )
    _refuse_a_directory_as_endpoints(args.endpoints)
    if not Path(args.endpoints).is_file():
        raise InvalidConfig(
            f"--endpoints {args.endpoints}: no such file; it names the tracker store to "
            "export from (tracker_store) and the event broker to publish to (event_broker)"
        )
    endpoints = read_endpoints(args.endpoints)
    if not endpoints.get("tracker_store"):
        raise InvalidConfig(
            f"{args.endpoints}: no tracker_store section: there is nothing to export from "
            "(botserver run keeps conversations in botserver.db without one: say `type: sql, "
            "dialect: sqlite, db: botserver.db`)"
        )
    if not endpoints.get("event_broker"):
        raise InvalidConfig(
            f"{args.endpoints}: no event_broker section: there is nothing to publish to"
        )
    offset = args.offset_timestamps_by_seconds
    if offset:
        import datetime

        later = "later" if offset > 0 else "earlier"
        print(
            f"Event timestamps are offset by {offset} s "
            f"({datetime.timedelta(seconds=abs(offset))} {later}) in what is published."
        )
    found, progress = Found(), Progress()

    async def export() -> int:
        store = create_tracker_store(
            endpoints["tracker_store"], args.endpoints, create_missing=False, read_only=True
        )
        broker = create_event_broker(endpoints["event_broker"], args.endpoints)
        assert broker is not None  # the section is there
        try:
            selected = selected_events(
                store, ids, low, high, offset or 0, args.resume_from, found, args.skip_unreadable
            )
            return await exporting.publish_events(broker, selected, progress)
        finally:
            if found.missing and ids and len(found.missing) < len(set(ids)):
                logger.warning(
                    "Not in the tracker store: conversations %s", ", ".join(found.missing)
                )
            await broker.close()
            await store.close()

    skip_hint = "" if args.skip_unreadable else _SKIP_UNREADABLE_HINT
    try:
        published = _run_until_stopped(export())
    except CorruptConversation as exc:  # (before any event went out)
        raise CorruptConversation(f"{exc}{skip_hint}") from exc
    except ExportInterrupted as exc:
        if not exc.published:
            raise
        stopped_at = exporting.ResumePoint(
            exc.resume_sender_id, exc.resume_timestamp, exc.resume_skip
        )
        go_on = _export_resume_command(args, stopped_at)
        if not isinstance(exc.__cause__, CorruptConversation):
            skip_hint = ""
        raise ExportInterrupted(
            f"{exc}{_skipped(found)}; to go on from there: {go_on}{skip_hint}",
            exc.published,
            exc.resume_timestamp,
            exc.resume_sender_id,
            exc.resume_skip,
        ) from None
    except KeyboardInterrupt as exc:
        if progress.published and progress.resume is not None:
            go_on = _export_resume_command(args, progress.resume)
            command_failed(
                f"stopped{_by(exc)} (after {how_many(progress.published, 'event')})"
                f"{_skipped(found)}; to go on from there: {go_on}"
            )
        raise
    conversations = how_many(found.conversations, "conversation")
    done = f"Published {how_many(published, 'event')} of {conversations}"
    if found.unreadable:
        print(f"{done}; {_skipped(found)[2:-1]}.")
        return EXIT_SKIPPED
    print(f"{done}.")
    return 0


def _skipped(found: Found) -> str:
    """` (skipped N conversations that could not be read: a, b)`, or "" where none was: an
    export stopped after a skip names them, as the run that goes on after them does not."""
    if not found.unreadable:
        return ""
    skipped = how_many(len(found.unreadable), "conversation")
    return f" (skipped {skipped} that could not be read: {', '.join(found.unreadable)})"


_SKIP_UNREADABLE_HINT = (
    " (with --skip-unreadable the export passes over such a conversation, naming it, and "
    "publishes the others)"
)


def _export_resume_command(args: argparse.Namespace, resume: ResumePoint) -> str:
    """The `botserver export` that publishes what an interrupted one did not."""
    import shlex

    words = ["botserver", "export", "--endpoints", args.endpoints]
    if args.minimum_timestamp is not None:
        words += ["--minimum-timestamp", repr(args.minimum_timestamp)]
    if args.maximum_timestamp is not None:
        words += ["--maximum-timestamp", repr(args.maximum_timestamp)]
    if args.conversation_ids is not None:
        words += ["--conversation-ids", args.conversation_ids]
    if args.offset_timestamps_by_seconds is not None:
        words += ["--offset-timestamps-by-seconds", str(args.offset_timestamps_by_seconds)]
    if args.skip_unreadable:
        words.append("--skip-unreadable")
    skip = f"#{resume.skip}" if resume.skip else ""
    words.append(f"--resume-from={resume.sender_id}@{resume.timestamp!r}{skip}")
    return shlex.join(words)


COMMANDS = {
    "init": cmd_init,
    "train": cmd_train,
    "run": cmd_run,
    "shell": cmd_shell,
    "test": cmd_test,
    "visualize": cmd_visualize,
    "prune": cmd_prune,
    "export": cmd_export,
}


def _unrecognized(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """`unrecognized arguments: ...`, with the closest flag of `parser` for a typo (in any
    case: `--Enable-Api`)."""
    from server.setting_values import near_miss

    if parser.prog.endswith(" shell"):
        # `rasa shell` takes them: it serves the bot over HTTP and talks to it through that.
        run_flags = _subcommand(build_parser(), "run")._option_string_actions
        for flag in (arg.split("=", 1)[0] for arg in unknown):
            if flag in run_flags:
                return (
                    f"{flag} is a flag of `botserver run`: `botserver shell` talks to the bot "
                    "in this process and serves nothing over HTTP (run `botserver run` beside "
                    "it for that)"
                )
    rasas = _rasa_flag_not_offered(parser, unknown)
    if rasas:
        return rasas
    message = f"unrecognized arguments: {' '.join(unknown)}"
    known = [o for action in parser._actions for o in action.option_strings]
    for arg in unknown:
        if arg.startswith("-"):
            # difflib's default measure, as before: a flag is short, one slip weighs more
            close = near_miss(arg.split("=")[0], known, cutoff=0.6)
            if close:
                return message + f" (did you mean {close}?)"
    return message


# Rasa's comparison mode: `rasa test` and `rasa train core` with several configs, each trained
# on parts of the stories or NLU data. Its flags, by the commands that take them.
COMPARISON = "Rasa's comparison mode (several configs, each trained on parts of the data)"
COMPARISON_FLAGS = {
    "botserver test": {"-r", "--runs", "-p", "--percentages", "--evaluate-model-directory"},
    "botserver train core": {"--runs", "--percentages"},
}
INSTEAD_OF_COMPARISON = (
    "train one model per config (`botserver train -c CONFIG --out DIR`) and test each with "
    "`botserver test -m MODEL`"
)


def _rasa_flag_not_offered(parser: argparse.ArgumentParser, unknown: list[str]) -> str | None:
    """What to say of a flag Rasa has and botserver does not (argparse's `unrecognized
    arguments` reads as a typo); None for any other."""
    flags = COMPARISON_FLAGS.get(parser.prog, set())
    for flag in (arg.split("=", 1)[0] for arg in unknown):
        if flag in flags:
            return f"{flag} is of {COMPARISON}, not offered here: {INSTEAD_OF_COMPARISON}"
        if flag == "--url" and parser.prog == "botserver test":
            return (
                "--url (Rasa's, deprecated) fetched the test stories from a URL; botserver "
                "does not: download them and give the file with -s"
            )
    words = getattr(parser, "_arguments", [])
    if parser.prog in COMPARISON_FLAGS and unknown and not unknown[0].startswith("-"):
        for index, word in enumerate(words[:-2]):
            if word in ("-c", "--config") and words[index + 2] == unknown[0]:
                return (
                    f"{word} takes one config: {COMPARISON} is not offered ({unknown[0]} was "
                    f"read as a second config); {INSTEAD_OF_COMPARISON}"
                )
            if (
                word in ("-m", "--model")
                and parser.prog == "botserver test"
                and words[index + 2] == unknown[0]
            ):
                return (
                    f"{word} takes one model: Rasa's comparison mode (several models tested "
                    f"side by side) is not offered ({unknown[0]} was read as a second model); "
                    "test each with `botserver test -m MODEL --out DIR`"
                )
    return None


def _unknown_arguments(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit 2 with the command's usage, suggesting the closest flag for a typo."""
    parser.error(_unrecognized(parser, unknown))


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    found: argparse.ArgumentParser = commands.choices[name]
    return found


def _logging_flags_after_the_command(words: list[str]) -> list[str]:
    """`botserver -v run actions`: the logging flags given before the command, moved after it,
    where every command's parser reads them."""
    logging_flags = argparse.ArgumentParser(add_help=False)
    _add_log_flags(logging_flags)
    known = logging_flags._option_string_actions
    moved: list[str] = []
    index = 0
    while index < len(words):
        flag = words[index].split("=", 1)[0]
        if flag not in known and not re.fullmatch(r"-v+", flag):
            break
        takes_value = flag in known and known[flag].nargs != 0 and "=" not in words[index]
        step = 2 if takes_value else 1
        moved += words[index : index + step]
        index += step
    rest = words[index:]
    if not moved or not rest:
        return words
    # Right after the command's words, before its own flags: the last level flag still wins.
    end = next((at for at, word in enumerate(rest) if word.startswith("-")), len(rest))
    return [*rest[:end], *moved, *rest[end:]]


# Commands made of parts, whose logging flags Rasa reads between the words too.
_GROUPS = (("data",), ("data", "split"), ("data", "convert"))


def _logging_flags_after_the_parts(words: list[str]) -> list[str]:
    """`botserver data -v validate`, `data split --quiet nlu`: the logging flags given between
    a group's words, moved after the part, where its parser reads them (argparse's group
    parser has none)."""
    for group in _GROUPS:
        if tuple(words[: len(group)]) == group:
            rest = _logging_flags_after_the_command(words[len(group) :])
            words = [*group, *rest]
    return words


# The parts of `shell`, never read as a model path.
_SHELL_PARTS = ("nlu",)


def _model_as_positional(words: list[str]) -> list[str]:
    """`botserver shell models/x.tar.gz -v` (and `shell nlu models/x.tar.gz`): the first word
    after `shell` that is an existing path, neither a flag nor a flag's value, is the model,
    wherever it stands among the flags, as `rasa shell` reads it; so is a missing archive or
    path (`models/old`), which the model check then names."""
    if len(words) < 2 or words[0] != "shell":
        return words
    for index in range(1, len(words)):
        word = words[index]
        if word == "--":
            break
        if (
            not word.startswith("-")
            and word not in _SHELL_PARTS
            and (Path(word).exists() or word.endswith(".tar.gz") or "/" in word)
            and not _takes_the_next_word(words[index - 1])
        ):
            return [*words[:index], "--model", word, *words[index + 1 :]]
    return words


def _takes_the_next_word(word: str) -> bool:
    """Whether `word` is a flag of `shell` whose value is the word after it (`--endpoints`,
    not `-vv`, `--debug` nor `--endpoints=e.yml`); an unknown flag is taken to have one."""
    if not word.startswith("-") or "=" in word or re.fullmatch(r"-v+", word):
        return False
    action = _subcommand(build_parser(), "shell")._option_string_actions.get(word)
    return action is None or action.nargs != 0


# A command's parts, as (command words, parts, the flag of each part that reads the data `--data`
# reads for the whole command).
_PARTS_AFTER_DATA = {
    ("train",): {"core": "-s", "nlu": "-u"},
    ("data", "validate"): {"stories": "--data"},
}


def _part_read_as_data(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """`botserver train --data x core`: `--data` takes one or more values, so argparse reads
    the part to run as a data path (Rasa's parser does the same). When no file of that name
    exists, exit 2 naming the command meant, rather than train or validate the whole project."""
    for command, parts in _PARTS_AFTER_DATA.items():
        if tuple(argv[: len(command)]) != command:
            continue
        values: list[str] | None = None  # the values of a --data being read
        for index, token in enumerate(argv[len(command) :]):
            if token.startswith("-"):
                values = [] if token == "--data" else None
            elif values is None:
                if token in parts:
                    return  # the part, where it belongs (or another flag's value)
            elif token in parts and not Path(token).exists():
                meant = f"botserver {' '.join(command)} {token} {parts[token]} "
                meant += " ".join(values) or "data"
                known, _ = parser.parse_known_args(argv[: len(command) + index])
                (getattr(known, "command_parser", None) or parser).error(
                    f"`{token}` after --data was read as a data path (--data takes one or "
                    f"more), and there is no file {token}; to run `{' '.join(command)} "
                    f"{token}`, name it first: {meant}"
                )
            else:
                values.append(token)


# What `rasa run actions` runs: rasa-sdk's action server, given the rest of the arguments.
ACTION_SERVER_MODULE = "rasa_sdk"
DEFAULT_ACTIONS_PACKAGE = "actions"
# Runs the module named first (`python -c LAUNCHER rasa_sdk ...`) as `python -m` would, but
# with the command the user typed as the program name: argparse names it in the usage line
# and errors (`botserver run actions: error: ...`, where `-m` gave `__main__.py: error`).
ACTION_SERVER_LAUNCHER = (
    "import runpy, sys; module = sys.argv.pop(1); sys.argv[0] = 'botserver run actions'; "
    "runpy.run_module(module, run_name='__main__')"
)
_RASA_SDK_SPELLING = {"--logging-config-file": "--logging-config_file"}


def _in_rasa_sdks_spelling(arg: str) -> str:
    """Rasa's `--logging-config-file` (of `rasa run actions`) as rasa-sdk's parser spells it,
    `--logging-config_file`: passed on as it was, rasa-sdk stopped on it (exit 2)."""
    flag, sep, value = arg.partition("=")
    return _RASA_SDK_SPELLING.get(flag, flag) + sep + value


def run_action_server(argv: list[str]) -> int:
    """`botserver run actions ...`, as `rasa run actions`: rasa-sdk's server replaces this
    process (its flags, its exit code, its signals), on the `actions` package unless
    `--actions` or `--actions-module` names another. botserver runs no custom actions itself."""
    import importlib.util

    if importlib.util.find_spec(ACTION_SERVER_MODULE) is None:
        # Its logging flags (rasa-sdk's too: --log-file, --logging-config-file, -v) say where
        # the line goes besides stderr.
        logging_flags = argparse.ArgumentParser(add_help=False, exit_on_error=False)
        _add_log_flags(logging_flags)
        try:
            given = logging_flags.parse_known_args(argv)[0]
        except argparse.ArgumentError:  # (`--log-format xml`: rasa-sdk's to refuse)
            given = argparse.Namespace()
        if not _logging_configured(given):
            return 1
        from server.logs import command_failed

        command_failed(
            "`run actions` starts rasa-sdk's action server, which is not installed in "
            f"this Python ({sys.executable}): pip install rasa-sdk, then run it again (or "
            "`python -m rasa_sdk --actions actions`). botserver calls the action server that "
            "endpoints.yml's action_endpoint names; it runs no custom action code itself."
        )
        return 1
    argv = [_in_rasa_sdks_spelling(arg) for arg in argv]
    flags = {arg.split("=", 1)[0] for arg in argv}
    if not flags & {"--actions", "--actions-module", "-h", "--help"}:
        argv = ["--actions", DEFAULT_ACTIONS_PACKAGE, *argv]
    command = [sys.executable, "-c", ACTION_SERVER_LAUNCHER, ACTION_SERVER_MODULE, *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
    return 1  # not reached: execv replaces the process


# Rasa's commands botserver does not offer, and what to use instead.
RASA_COMMANDS_NOT_OFFERED = {
    "interactive": (
        "there is no interactive learning. Talk to the bot in the web chat at /inspect of "
        "`botserver run --enable-api` and take the conversation as a story from "
        "GET /conversations/<id>/story"
    ),
    "x": (
        "Rasa X is a separate product. `botserver run --enable-api` serves Rasa's HTTP API "
        "and a web chat beside the live tracker at /inspect"
    ),
    "telemetry": "botserver sends no telemetry, so there is nothing to enable or disable",
    "evaluate": "`rasa evaluate markers` is not offered",
}


def _rasa_command_not_offered(parser: argparse.ArgumentParser, words: list[str]) -> None:
    """`botserver interactive`: said to be Rasa's, with what to use instead (argparse's
    `invalid choice` reads as a typo)."""
    asked = [word for word in words if word not in ("-h", "--help")]
    if asked == ["telemetry"] or asked[:2] == ["telemetry", "disable"]:
        # What a Dockerfile's `rasa telemetry disable` asks for holds: the build goes on; and
        # `rasa telemetry` alone (or with --help) says whether it is on (exit 0, as Rasa's).
        print(f"botserver: {RASA_COMMANDS_NOT_OFFERED['telemetry']}.", file=sys.stderr)
        parser.exit(0)
    if words and words[0] in RASA_COMMANDS_NOT_OFFERED:
        parser.error(
            f"`rasa {words[0]}` has no botserver equivalent: {RASA_COMMANDS_NOT_OFFERED[words[0]]}."
        )


def _logging_configured(args: argparse.Namespace) -> bool:
    """Logging as the command's flags ask; False, the reason printed, when it cannot be."""
    from server.logs import configure_logging, why_logging_failed

    log_file = getattr(args, "log_file", None)
    syslog = (
        (args.syslog_address, args.syslog_port, args.syslog_protocol)
        if getattr(args, "use_syslog", False)
        else None
    )
    try:
        configure_logging(
            verbosity=-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0),
            log_file=log_file,
            fmt=getattr(args, "log_format", "text"),
            config_file=getattr(args, "logging_config_file", None),
            syslog=syslog,
        )
    # A log file or syslog we cannot open, a LOG_LEVEL or --logging-config-file we cannot use
    except (OSError, BotServerError) as exc:
        print(f"error: {why_logging_failed(exc, log_file, syslog)}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    words = _logging_flags_after_the_command(sys.argv[1:] if argv is None else argv)
    words = _model_as_positional(_logging_flags_after_the_parts(words))
    if words[:2] == ["run", "actions"]:
        return run_action_server(words[2:])
    parser = build_parser()
    _rasa_command_not_offered(parser, words)
    _part_read_as_data(parser, words)
    args, unknown = parser.parse_known_args(words)
    if unknown:
        _unknown_arguments(getattr(args, "command_parser", None) or parser, unknown)
    if args.command is None:
        parser.print_help()
        return 1
    if not _logging_configured(args):
        return 1
    if args.command == "data":
        if args.data_command == "split" and args.split_what == "nlu":
            handler = cmd_split_nlu
        elif args.data_command == "split" and args.split_what == "stories":
            handler = cmd_split_stories
        elif args.data_command == "convert" and args.convert_what == "nlu":
            handler = cmd_convert_nlu
        elif args.data_command == "migrate":
            handler = cmd_migrate
        elif args.data_command == "validate":
            handler = cmd_validate
        else:
            parser.parse_args(["data", *([args.data_command] if args.data_command else []), "-h"])
            return 1  # not reached: -h exits
    else:
        handler = COMMANDS[args.command]
    try:
        return handler(args)
    except BotServerError as exc:
        failure = str(exc)
    except ModuleNotFoundError as exc:
        # A backend endpoints.yml or credentials.yml names, whose library comes with an extra
        # of the package (`pip install botserver` brings none of them): the extra, not a
        # traceback.
        package = (exc.name or "").partition(".")[0]
        if package not in OPTIONAL_PACKAGES:
            raise
        extra = OPTIONAL_PACKAGES[package][1]
        failure = (
            f"the Python package '{package}' is not installed; it comes with botserver's "
            f"'{extra}' extra: {install_extra(extra)}"
        )
    except OSError as exc:
        # A file the command reads or writes, failing after the checks above (a full disk,
        # a permission changed meanwhile): the file and the reason, not a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        failure = f"{where}{exc.strerror or exc}"
    except Terminated:
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        return 130
    from server.logs import command_failed

    command_failed(failure)
    return 1


if __name__ == "__main__":
    sys.exit(main())
