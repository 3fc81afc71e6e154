"""Input and output channels: rest, callback, socketio, rocketchat, and custom classes."""

from server.channels.channel import InputChannel, OnNewMessage
from server.channels.mount import attach_channels, channel_routers, mount_channel_apps
from server.channels.registry import CHANNELS, channel_class, load_channels

__all__ = [
    "CHANNELS",
    "InputChannel",
    "OnNewMessage",
    "attach_channels",
    "channel_class",
    "channel_routers",
    "load_channels",
    "mount_channel_apps",
]
