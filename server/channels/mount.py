"""Attaches channels to the FastAPI app: their webhook routers and any ASGI sub-app."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, FastAPI

from server.channels.channel import InputChannel, OnNewMessage


def channel_routers(
    channels: Iterable[InputChannel], on_new_message: OnNewMessage
) -> list[APIRouter]:
    """One router per channel, each under `/webhooks/<name>` (for `create_app(routers=...)`)."""
    return [channel.router(on_new_message) for channel in channels]


def mount_channel_apps(
    app: FastAPI, channels: Iterable[InputChannel], on_new_message: OnNewMessage
) -> None:
    """Mounts the ASGI apps channels bring (socket.io at its `socketio_path`)."""
    for channel in channels:
        mounted = channel.asgi_mount(on_new_message)
        if mounted is not None:
            path, asgi_app = mounted
            app.mount(path, asgi_app)


def attach_channels(
    app: FastAPI, channels: Iterable[InputChannel], on_new_message: OnNewMessage
) -> None:
    """Both of the above, for an app built without the channel routers."""
    channels = list(channels)
    for router in channel_routers(channels, on_new_message):
        app.include_router(router)
    mount_channel_apps(app, channels, on_new_message)
