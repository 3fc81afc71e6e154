"""What a start costs: a command or a server imports only the libraries its path needs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.tcp_proxy import free_port
from tests.cli.botserver_process import REPO, ServerProcess, botserver_command
from tests.cli.once_per_run import once_per_run
from tests.shared_data import BOTS


def _modules_after(code: str, cwd: Path) -> set[str]:
    """The top-level packages in sys.modules after `code` runs in a fresh interpreter."""
    return set(_run(code, cwd).split("\n")[-2].split())


def _run(code: str, cwd: Path) -> str:
    """What `code` prints in a fresh interpreter, then a line of the top-level packages in
    sys.modules."""
    tops = "{m.split('.')[0] for m in sys.modules}"
    script = f"{code}\nimport sys\nprint(' '.join(sorted({tops})))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_serving_moodbot_loads_no_crf_library(restarted: Restarted) -> None:
    """moodbot's pipeline extracts no entities: before, every server loaded python-crfsuite
    (and every other component's module) whatever the model's pipeline held. (Read off the
    restarted server below: one start serves both tests.)"""
    assert "/numpy/" in restarted.maps  # the check sees the libraries a server does load
    assert "pycrfsuite" not in restarted.maps
    assert restarted.served_while_mapped


def test_a_pipeline_without_crf_does_not_import_it_and_one_with_crf_does(tmp_path: Path) -> None:
    """Components are still found by their Rasa names; each module is imported on use, and
    checking the CRF's options (as `data validate` does) builds it without python-crfsuite,
    which only training and tagging load."""
    code = (
        "import sys\n"
        "from server.nlu.pipeline import NLUPipeline\n"
        "NLUPipeline.check([{'name': 'WhitespaceTokenizer'}, {'name': 'RegexFeaturizer'}])\n"
        "print('crf module', 'server.nlu.crf_extractor' in sys.modules)\n"
    )
    without = _run(code, tmp_path)
    assert "crf module False" in without
    crf = "{'name': 'CRFEntityExtractor'}"
    with_crf = _run(code.replace("'RegexFeaturizer'}", f"'RegexFeaturizer'}}, {crf}"), tmp_path)
    assert "crf module True" in with_crf
    assert "pycrfsuite" not in with_crf.split("\n")[-2].split()


def test_logging_setup_of_a_cli_command_imports_no_web_framework(tmp_path: Path) -> None:
    """`botserver data validate`, `train` and every other command configure logging first;
    before, that imported FastAPI and pydantic (through the auth package) for every command."""
    code = "from server.logs import configure_logging\nconfigure_logging(verbosity=0)\n"
    modules = _modules_after(code, tmp_path)
    assert "yaml" in modules
    assert "fastapi" not in modules
    assert "pydantic" not in modules


def test_a_server_without_a_sql_store_or_jwt_settings_imports_neither_library(
    tmp_path: Path,
) -> None:
    """Before, the server module imported SQLAlchemy (through the remote model storages'
    timeout setting) even with the in-memory tracker store, and PyJWT (and the cryptography
    backends it loads) came with every server. (One interpreter checks both, then that JWT
    settings do import PyJWT.)"""
    tops = "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    code = (
        "import sys\n"
        "import server.api.runner\n"
        "from server.trackers.factory import create_tracker_store\n"
        "create_tracker_store({'type': 'in_memory'})\n"
        "from server.auth import Authenticator, AuthConfig\n"
        "Authenticator(AuthConfig(token='secret'))\n"
        f"{tops}\n"
        "Authenticator(AuthConfig(jwt_secret='a' * 32, jwt_method='HS256'))\n"
    )
    lines = _run(code, tmp_path).split("\n")
    modules, with_jwt = set(lines[-3].split()), set(lines[-2].split())
    assert "fastapi" in modules
    assert "sqlalchemy" not in modules
    assert "jwt" not in modules
    assert "jwt" in with_jwt


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--credentials", "missing.yml"], "error: --credentials missing.yml: no such file"),
        (["--remote-storage", "nope"], "error: --remote-storage 'nope' is not supported"),
        (["--connector", "nope"], "error: --connector nope: Unknown channel 'nope'"),
        (["--connector", "slack"], "error: --connector slack: Rasa's 'slack' channel is not"),
        (["--verify-key", "nope.pem"], "error: --verify-key nope.pem: no such file"),
        # Without --enable-api, a model server or remote storage, as `rasa run`: before, the
        # server's imports and stores (0.9 s of CPU) came first.
        (["-m", "nope.tar.gz"], "error: No model found at 'nope.tar.gz' (No such file"),
        (["-m", "."], "error: No model archive (.tar.gz) in '.'"),
    ],
)
def test_a_wrong_run_flag_is_said_before_the_server_is_imported(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    """Before, each took some 1.5-2 s of CPU (the web framework, the stores, NLU's libraries
    imported) before its one line; now about what an argparse error takes."""
    _assert_refused_before_the_server_is_imported(["run", *flags], said, tmp_path)


def _assert_refused_before_the_server_is_imported(argv: list[str], said: str, cwd: Path) -> None:
    """`botserver ARGV`, in a fresh interpreter, exits 1 with the line `said` and has imported
    none of the server's heavy packages."""
    code = (
        "import contextlib, io, cli\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        f"    code = cli.main({argv!r})\n"
        "open('answer.txt', 'w').write(f'{code} {err.getvalue().strip()}')\n"
    )
    modules = _modules_after(code, cwd)
    code_and_err = (cwd / "answer.txt").read_text()
    assert code_and_err.startswith("1 ") and f"\n{said}" in f"\n{code_and_err[2:]}", code_and_err
    assert not {"fastapi", "starlette", "sklearn", "numpy", "sqlalchemy"} & modules


# Loaded with the server (PYTHONPATH): writes each collection the server process makes while
# it starts, from its first import of the server to the freeze once its model is loaded.
COLLECTIONS_OBSERVER = """
import atexit, gc, os, sys
_log = open(os.environ["COLLECTIONS_LOG"], "a", buffering=1)
def _seen(phase, info):
    if phase == "start" and "server.api.runner" in sys.modules and not gc.get_freeze_count():
        _log.write(f"{info['generation']}\\n")
gc.callbacks.append(_seen)
def _modules():  # at exit: the top-level packages imported (a refused name is None)
    names = {name.split(".")[0] for name, module in sys.modules.items() if module is not None}
    _log.write("modules " + " ".join(sorted(names)) + "\\n")
atexit.register(_modules)
"""


@dataclass
class Restarted:
    """What the restarted server showed: its libraries once ready (/proc/<pid>/maps; empty
    without /proc) and whether it still ran then, the user messages stored for a "hello"
    sent to it (None if it was not answered 200), its exit code, its output (each import,
    PYTHONPROFILEIMPORTTIME) and the generations of the collections it made while starting."""

    maps: str
    served_while_mapped: bool
    stored: list[str] | None
    code: int
    text: str
    collections: list[str]
    modules: list[str]


@pytest.fixture(scope="module")
def restarted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Restarted:
    """What the one restart showed (once per test run, whichever xdist workers run the
    tests; the moodbot model is trained only where it is made)."""
    return once_per_run(
        tmp_path_factory,
        "startup-restarted",
        Restarted,
        lambda: _restart(request.getfixturevalue("moodbot_model"), tmp_path_factory),
    )


def _restart(moodbot_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Restarted:
    """moodbot served by a server restarted on its SQLite file (`botserver.db`, migrated as
    by its first start), with each import and collection it makes while it starts written."""
    from server.trackers.factory import create_tracker_store

    tmp_path = tmp_path_factory.mktemp("restarted")

    async def migrate() -> None:  # the first start's migration
        database = str(tmp_path / "botserver.db")  # the server's file without a tracker_store
        store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": database})
        await store.ping()
        await store.close()

    asyncio.run(migrate())
    (tmp_path / "observer").mkdir()
    (tmp_path / "observer" / "sitecustomize.py").write_text(COLLECTIONS_OBSERVER)
    collections = tmp_path / "collections.log"
    port = free_port()
    output = tmp_path / "server.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [*botserver_command(), "run", "-m", str(moodbot_model), "--enable-api"]
            + ["-p", str(port), "-i", "127.0.0.1"],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONPATH": f"{tmp_path / 'observer'}{os.pathsep}{REPO}",
                "PYTHONPROFILEIMPORTTIME": "1",  # each import on stderr
                "COLLECTIONS_LOG": str(collections),
            },
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", output)
    maps, stored = "", None
    try:
        server.wait_until("/health/ready")  # (pings the tracker store: its set-up ran)
        if Path("/proc/self/maps").exists():
            maps = _mapped_libraries(server.process.pid)
        served = server.process.poll() is None
        said = httpx.post(
            server.url + "/webhooks/rest/webhook",
            json={"sender": "restart", "message": "hello"},
            timeout=30,
        )
        if said.status_code == 200:
            tracker = httpx.get(server.url + "/conversations/restart/tracker", timeout=30).json()
            stored = [e["text"] for e in tracker["events"] if e["event"] == "user"]
    finally:
        code = server.stop()
    *generations, modules = collections.read_text().splitlines()
    return Restarted(maps, served, stored, code, server.text(), generations, modules.split()[1:])


def test_a_restart_on_an_up_to_date_sqlite_store_skips_alembic_and_the_collector(
    restarted: Restarted,
) -> None:
    """A server restarted on its SQLite file (`botserver.db`, migrated by its first start)
    imports no Alembic, and its collector does not run while it imports and loads the model
    but once, before the model's objects are frozen. Before: Alembic (with Mako, Pygments
    and every dialect's DDL) at each start, 0.15 s of CPU, and 340 collections, three of
    them full, 0.2 s: together a third of a 1.1 s start. Nor does it import httpx's
    command-line client (rich, Pygments; 0.07 s of CPU more), nor SQLAlchemy's ORM, which its
    asyncio extension imported for the sessions no store uses (0.1-0.2 s more), nor
    cryptography, which only a verify key or a signing key needs (10-15 ms)."""
    assert restarted.stored == ["hello"], restarted.text
    assert restarted.code == 0, restarted.text
    imported = {line.rsplit("|", 1)[-1].strip() for line in restarted.text.splitlines()}
    assert {"fastapi", "sqlalchemy"} <= imported  # the check sees the server's imports
    assert not {name for name in imported if name.split(".")[0] in ("alembic", "mako")}
    assert restarted.collections == ["2"]  # the one before the freeze
    assert "fastapi" in restarted.modules  # (the list is written)
    assert {"cryptography", "pygments", "rich"} & set(restarted.modules) == set()
    assert "sqlalchemy.orm" not in imported


_TRAIN_ONE = "Train one with `botserver train`, or pass one with -m."


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["shell", "-m", "nope.tar.gz"], f"from 'nope.tar.gz'. {_TRAIN_ONE}"),
        (["shell", "models/old.tar.gz", "-v"], f"from 'models/old.tar.gz'. {_TRAIN_ONE}"),
        (["shell"], f"from 'models'. {_TRAIN_ONE}"),
        # A path that exists: what is there instead is said too.
        (
            ["shell", "nlu", "-m", "."],
            f"from '.' (No model archive (.tar.gz) in '.'). {_TRAIN_ONE}",
        ),
    ],
)
def test_a_shell_without_its_model_says_so_before_the_server_is_imported(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    """As `run`'s check (above): before, the shell built the whole server (its imports, its
    stores), 1.2 CPU-s, to find there was no model to load."""
    said = f"error: no model could be loaded {said}"
    _assert_refused_before_the_server_is_imported(argv, said, tmp_path)


def test_the_storages_checked_before_the_imports_are_the_ones_served() -> None:
    from server.models.remote_storage import STORAGES
    from server.run_flags import STORAGES as CHECKED

    assert CHECKED == STORAGES


@pytest.mark.parametrize("bot", ["moodbot", "concertbot", "formbot"])
def test_data_validate_and_the_train_checks_import_no_numpy(tmp_path: Path, bot: str) -> None:
    """`botserver data validate` checks config.yml's pipeline and policies as `train` does,
    building each component without training it; before, that imported NumPy (a third of the
    command's CPU) through the modules of the components it built (and python-crfsuite for
    concertbot's entity extraction), and asyncio (through the logging set-up and the domain's
    module) though it runs no event loop; formbot's Duckling extractor imported httpx and
    asyncio with the outgoing clients' module, though it sends no request."""
    project = BOTS / bot
    code = (
        "import cli\n"
        f"code = cli.main(['data', 'validate', '-d', {str(project / 'domain.yml')!r},"
        f" '--data', {str(project / 'data')!r}, '-c', {str(project / 'config.yml')!r}])\n"
        "open('answer.txt', 'w').write(str(code))\n"
    )
    modules = _modules_after(code, tmp_path)
    assert (tmp_path / "answer.txt").read_text() == "0"
    assert "yaml" in modules  # the check sees what the command does import
    assert not {"numpy", "scipy", "sklearn", "pycrfsuite", "fastapi", "asyncio", "httpx"} & modules


@pytest.mark.parametrize("command", [["--help"], ["test", "nlu", "--help"]])
def test_help_imports_no_event_loop_library(tmp_path: Path, command: list[str]) -> None:
    """Before, every command, `--help` included, imported asyncio (some 40 % of `--help`'s
    CPU); only the commands that run an event loop import it now."""
    code = (
        "import contextlib, io, cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        f"    cli.main({command!r})\n"
        "open('answer.txt', 'w').write(out.getvalue())\n"
    )
    modules = _modules_after(code, tmp_path)
    assert "usage: botserver" in (tmp_path / "answer.txt").read_text()
    assert "argparse" in modules
    assert "asyncio" not in modules
