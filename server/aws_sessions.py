"""boto3 sessions for the AWS clients (the DynamoDB tracker store, S3 remote storage) that
share one loader of botocore's JSON service models a process."""

from __future__ import annotations

import os
import threading
from typing import Any

# A new botocore session reads and parses its service model, the endpoint rules and the
# partitions again (about 0.1 s of CPU for a DynamoDB or S3 client): each S3 pull and each
# DynamoDB store paid it. Credentials, region and config stay each session's own.
_loaders: dict[str | None, Any] = {}
_loaders_lock = threading.Lock()


class _SearchPaths(list[str]):
    """A loader's folders; boto3 appends its own to the loader of each session it wraps,
    which on a shared loader would grow the list by one a session."""

    _lock = threading.Lock()  # two threads' first sessions append at once

    def append(self, path: str) -> None:
        with self._lock:
            if path not in self:
                super().append(path)


def _shared_loader(data_path: str | None) -> Any:
    from botocore.loaders import Loader

    with _loaders_lock:
        loader = _loaders.get(data_path)
        if loader is None:
            # As botocore's create_loader reads AWS_DATA_PATH (or data_path in the profile).
            folders = _SearchPaths(
                os.path.expanduser(os.path.expandvars(folder))
                for folder in (data_path.split(os.pathsep) if data_path else ())
            )
            loader = _loaders[data_path] = Loader(extra_search_paths=folders)
        return loader


def boto3_session(client_config: Any = None) -> Any:
    """A new boto3 session (its own credentials and settings, read as boto3 reads them)
    whose service models come from the process's loader; `client_config` is the default
    config of the clients it makes (its credential providers' too)."""
    import boto3
    import botocore.session

    session = botocore.session.get_session()
    session.register_component(
        "data_loader", _shared_loader(session.get_config_variable("data_path"))
    )
    if client_config is not None:
        session.set_default_client_config(client_config)
    return boto3.session.Session(botocore_session=session)
