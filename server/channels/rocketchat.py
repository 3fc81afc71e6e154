"""The Rocket.Chat channel: outgoing-webhook and livechat payloads in, REST API replies out.

One conversation per user per room (`<room_id>:<user_id>`); the bot's own messages are
ignored; the outgoing webhook's token is checked when `webhook_token` is configured.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any

import regex  # type: ignore[import-untyped]
from fastapi import APIRouter, HTTPException, Request, Response

from server import setting_values as settings
from server.auth.refusals import RefusalLog
from server.auth.static_token import token_matches
from server.channels.channel import (
    InputChannel,
    OnNewMessage,
    health_router,
    log_failed_turn,
    refused_as_too_long,
    reply_choices,
    turn_to_its_end,
)
from server.channels.rocketchat_api import RocketChatAPI, RocketChatError, RocketChatUnavailable
from server.channels.rocketchat_ids import conversation_id, room_of
from server.dialogue.messages import UserMessage, split_message
from server.errors import InvalidConfig, InvalidConversationId, LockTimeout, StoreError
from server.json_values import loads_untrusted
from server.urls import safe_url

logger = logging.getLogger(__name__)

LIVECHAT_TOKEN_HEADER = "X-RocketChat-Livechat-Token"


# Rocket.Chat's default Message_MaxAllowedSize, in JavaScript string length (UTF-16 units).
MAX_MESSAGE_LENGTH = 5000


def rocketchat_messages(
    room_id: str,
    message: dict[str, Any],
    max_length: int = MAX_MESSAGE_LENGTH,
    thread: str | None = None,
) -> list[dict[str, Any]]:
    """One bot message as `chat.postMessage` bodies, as Rasa's Rocket.Chat channel sends them.

    A text longer than `max_length` is sent in pieces (cut at a line break or a space where
    there is one): Rocket.Chat refuses a longer message, and the whole reply would be lost.
    `thread`: the id of the thread the user wrote in (`tmid`), where the posts to `room_id`
    go (Rasa posts them in the room's main timeline).
    """
    bodies: list[dict[str, Any]] = []
    for part in split_message(message):
        choices = reply_choices(part)
        if choices is not None:
            actions = [_action_button(choice) for choice in choices]
            text = part.get("text")
            *before, last = text_pieces(text, max_length) if isinstance(text, str) else [text]
            # (The buttons' post may have an empty text; a piece before it would be a bubble.)
            bodies.extend({"roomId": room_id, "text": p} for p in before if _shown(p))
            bodies.append({"roomId": room_id, "text": last, "attachments": [{"actions": actions}]})
        elif "text" in part:
            text = part["text"]
            pieces = text_pieces(text, max_length) if isinstance(text, str) else [text]
            # An empty text (a blank-only reply, or a paragraph of nothing or of spaces
            # between blank lines) would be an empty bubble in the room; Rasa posts it.
            kept = [p for p in pieces if _shown(p)]
            bodies.extend({"roomId": room_id, "text": piece} for piece in kept)
        elif "image" in part:
            attachment = {"image_url": part["image"], "collapsed": False}
            bodies.append({"roomId": room_id, "attachments": [attachment]})
        elif "attachment" in part:
            bodies.append({"roomId": room_id, "attachments": [part["attachment"]]})
        elif "elements" in part:
            bodies.append({"roomId": room_id, "attachments": part["elements"]})
        elif isinstance(part.get("custom"), dict):
            custom = dict(part["custom"])
            # As Rasa, whose client takes `room_id` for Rocket.Chat's `roomId`: a custom
            # message naming a `channel` goes there, else to its `room_id`, else to the
            # conversation's room.
            named_room = custom.pop("room_id", None)
            if custom.get("channel"):
                # Rocket.Chat 7.4 and later refuse a post naming both (`invalid-params`).
                custom.pop("roomId", None)
            else:  # an empty `channel` names no room, in Rasa neither
                custom.pop("channel", None)
                custom.setdefault("roomId", named_room or room_id)
            bodies.append(custom)
        elif "custom" in part:
            logger.warning(
                "rocketchat: a custom message to room %s was lost: it must be an object (a "
                "chat.postMessage body), not %s",
                room_id,
                settings.kind(part["custom"]),
            )
    if thread is not None:
        for body in bodies:
            if body.get("roomId") == room_id and "channel" not in body:
                body.setdefault("tmid", thread)
    return bodies


def _action_button(choice: dict[str, Any]) -> dict[str, Any]:
    """A button as a Rocket.Chat action button: it sends its payload in the room, or opens
    its `url` (which Rasa drops: such a button sent an empty message)."""
    url = choice.get("url")
    if url and choice.get("payload") is None:
        return {"type": "button", "text": choice.get("title"), "url": url}
    action = {
        "type": "button",
        "text": choice.get("title"),
        "msg": choice.get("payload"),
        "msg_in_chat_window": True,
    }
    if url:
        action["url"] = url
    return action


def _shown(piece: Any) -> bool:
    """Whether a piece of a bot text shows as more than an empty bubble (a text of blanks)."""
    return not isinstance(piece, str) or bool(piece.strip())


def text_pieces(text: str, max_length: int) -> list[str]:
    """`text` in pieces of at most `max_length` UTF-16 units, cut after a line break or a
    space when the piece has one (the whitespace at a cut is dropped), else between two
    characters as a reader sees them (grapheme clusters: an emoji with its skin tone, a ZWJ
    family, a flag, a letter with its accents stay whole), unless one alone is too long."""
    pieces: list[str] = []
    while _utf16_length(text) > max_length:
        end = _grapheme_start(text, _fitting_prefix(text, max_length))
        cut = max(text.rfind("\n", 0, end), text.rfind(" ", 0, end))
        if cut <= 0:
            cut = end
        # CR LF is one line break (one cluster): the CR goes with it.
        pieces.append(text[:cut].removesuffix("\r") if text[cut] == "\n" else text[:cut])
        text = text[cut:].lstrip(" \r\n")
    pieces.append(text)
    return pieces


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# One user-perceived character (an extended grapheme cluster, Unicode's UAX #29).
_GRAPHEME = regex.compile(r"\X")


def _grapheme_start(text: str, end: int) -> int:
    """The start of the grapheme cluster of `text` that holds index `end` (`end` itself when
    it starts one, or when that cluster starts the text: longer than any piece, it is cut).
    Read up to `end` only: whether a cluster ends before a character depends on that one and
    those before it, never on those after (a text's rest read again for each piece took
    time growing with the square of one endless cluster's length)."""
    start = 0
    for grapheme in _GRAPHEME.finditer(text[: end + 1]):
        start = grapheme.start()
    return start or end


def _fitting_prefix(text: str, max_length: int) -> int:
    """The length of the longest prefix of `text` within `max_length` UTF-16 units."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > max_length:
            return index
    return len(text)


class RocketChatOutput:
    """Posts the bot's messages to the conversation's room as the bot user.

    An output serves one turn (or one pushed message). Once Rocket.Chat did not answer in
    time, could not be reached or rate-limited the bot user, the output's other posts are
    not tried: each would wait the timeout again, under the conversation's lock, or be
    refused the same way.
    """

    name = "rocketchat"

    def __init__(
        self, api: RocketChatAPI, room_id: str | None = None, thread: str | None = None
    ) -> None:
        self.api = api
        self.room_id = room_id
        self.thread = thread  # the thread the user wrote in, where the replies go
        self._unavailable: str | None = None  # why the output gave up, once it did

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        room_id = self.room_id or room_of(recipient_id)
        try:
            bodies = rocketchat_messages(room_id, message, self.api.max_message_length, self.thread)
        except Exception as e:  # a failed reply must not fail the turn: it would not be stored
            logger.error("rocketchat: a bot message to room %s was lost: %r", room_id, e)
            return
        skipped = 0
        for body in bodies:
            if self._unavailable is not None:
                skipped += 1
                continue
            try:
                await self.api.post_message(body)
            except RocketChatUnavailable as e:
                self._unavailable = str(e)
                logger.error("rocketchat: a bot message to room %s was lost: %s", room_id, e)
            except RocketChatError as e:
                logger.error("rocketchat: a bot message to room %s was lost: %s", room_id, e)
            except Exception as e:  # as above
                logger.error("rocketchat: a bot message to room %s was lost: %r", room_id, e)
        if skipped:
            logger.error(
                "rocketchat: %d more bot message%s to room %s not sent: %s",
                skipped,
                "" if skipped == 1 else "s",
                room_id,
                self._unavailable,
            )


class RecentMessageIds:
    """The ids of the last `size` messages this process took, to ignore Rocket.Chat's retries
    of a webhook call it timed out on while the first call went on without waiting for the
    conversation's lock (a retry another process takes is found in the tracker store)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, message_id: str) -> bool:
        """Remembers `message_id`; False when it was already remembered."""
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True

    def forget(self, message_id: str) -> None:
        """For a message that was not recorded: its retry is to be taken."""
        self._ids.pop(message_id, None)


class RocketChatInput(InputChannel):
    """Rasa's `rocketchat` channel, keyed `user`, `password`, `server_url`, `webhook_token`."""

    name = "rocketchat"
    settings_keys = frozenset(
        (
            "user",
            "password",
            "server_url",
            "webhook_token",
            "timeout",
            "max_message_length",
            "ssl",  # from Rasa's example credentials; checked against server_url's scheme
        )
    )

    def __init__(self, api: RocketChatAPI, webhook_token: str | None = None) -> None:
        self.api = api
        self.webhook_token = webhook_token
        self.refusals = RefusalLog()
        self._next_identity_login = 0.0  # time.monotonic() of the next login to learn our id
        self._recent = RecentMessageIds()

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> RocketChatInput:
        c = credentials or {}
        missing = [key for key in ("user", "password", "server_url") if not c.get(key)]
        if missing:
            raise InvalidConfig(
                f"needs the bot user's Rocket.Chat login: missing {', '.join(missing)}"
            )
        api = RocketChatAPI(
            _server_url(c),
            settings.text(c, "user") or "",
            settings.text(c, "password") or "",
            timeout=settings.seconds(c, "timeout", 10.0),
        )
        api.max_message_length = settings.count(
            c, "max_message_length", MAX_MESSAGE_LENGTH, least=100
        )
        token = settings.text(c, "webhook_token")
        if token is None:
            logger.warning(
                "rocketchat: no webhook_token in credentials.yml, so the webhook takes calls "
                "from anyone who can reach it: they can speak as any Rocket.Chat user and have "
                "the bot post in any room it can. Set it to the outgoing webhook's token."
            )
        return cls(api, token)

    def get_output_channel(self) -> RocketChatOutput:
        return RocketChatOutput(self.api)

    async def aclose(self) -> None:
        await self.api.aclose()

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        router = health_router(self.url_prefix())

        async def receive(request: Request) -> Response:
            raw = await request.body()
            try:
                # loads_untrusted: NaN or an unpaired surrogate escape in a text would be
                # stored, and every later answer about the conversation fail to encode it.
                payload = loads_untrusted(raw or b"null")
            except ValueError:  # not such JSON, or nested too deep to read
                # Taken but not handled, as before, when it holds the right token (a text
                # cut in the middle of an emoji: a 401 would be retried six times).
                self._check_token(request, _token_holder(raw))
                return _taken()
            # The token first: a body that is no JSON object carries none, and was answered
            # 200 `{"success": true}` to anyone, as if taken.
            self._check_token(request, payload if isinstance(payload, dict) else {})
            if not isinstance(payload, dict):
                return _taken()
            if self.api.user_id is None and time.monotonic() >= self._next_identity_login:
                # The bot's own id tells its own messages apart, whatever name or e-mail it
                # logs in with; another worker process may have posted one already. A refused
                # login is not tried again here for a minute (Rocket.Chat limits logins).
                self._next_identity_login = time.monotonic() + 60
                with contextlib.suppress(RocketChatError):
                    await self.api.ensure_login()
            for message_id, message in self._user_messages(payload):
                if message_id is not None and not self._recent.add(message_id):
                    logger.info("rocketchat: message %s came again (a retry), ignored", message_id)
                    continue
                if await refused_as_too_long(message):
                    continue
                try:
                    await turn_to_its_end(logger, "rocketchat", on_new_message, message)
                except (StoreError, LockTimeout, InvalidConversationId):
                    # A 503 (or 400), as the REST channel answers: Rocket.Chat retries a
                    # failed call, and a 200 would acknowledge a message that was lost.
                    if message_id is not None:
                        self._recent.forget(message_id)
                    raise
                except Exception as e:
                    log_failed_turn(logger, "rocketchat", message.sender_id, e)
            return _taken()

        router.add_api_route("/webhook", receive, methods=["GET", "POST"], include_in_schema=False)
        return router

    def _check_token(self, request: Request, payload: dict[str, Any]) -> None:
        if self.webhook_token is None:
            return
        given = payload.get("token") or request.headers.get(LIVECHAT_TOKEN_HEADER) or ""
        # Digests compared, so the answer's timing tells neither a prefix nor the length (a
        # token read leniently, `_token_holder`, may hold a lone surrogate: encoded as is).
        if not token_matches(self.webhook_token, str(given)):
            client = request.client.host if request.client else "an unknown client"
            why = "wrong webhook token" if given else "no webhook token"
            self.refusals.record(f"{request.method} {request.url.path} with 401", client, why)
            raise HTTPException(401, "The Rocket.Chat webhook token is missing or wrong.")

    def _is_own(self, user_name: Any, user_id: Any) -> bool:
        return user_name == self.api.user or (
            self.api.user_id is not None and user_id == self.api.user_id
        )

    def _user_messages(self, payload: dict[str, Any]) -> list[tuple[str | None, UserMessage]]:
        """The user messages of a webhook body, each with its Rocket.Chat message id."""
        if "visitor" in payload:
            return self._livechat_messages(payload)
        if payload.get("bot") or self._is_own(payload.get("user_name"), payload.get("user_id")):
            return []
        room_id, text = _id(payload.get("channel_id")), payload.get("text")
        user_id = _id(payload.get("user_id")) or _id(payload.get("user_name"))
        if room_id is None or user_id is None or not isinstance(text, str):
            return []
        text = _without_trigger_word(text, payload.get("trigger_word"))
        message_id = _message_id(payload.get("message_id"), text, bool(payload.get("isEdited")))
        thread = _id(payload.get("tmid"))
        return [(message_id, self._message(room_id, user_id, text, message_id, thread))]

    def _livechat_messages(self, payload: dict[str, Any]) -> list[tuple[str | None, UserMessage]]:
        kind = payload.get("type")
        if kind is not None and kind != "Message":
            # A chat closed (its whole transcript, messages without ids: each would be
            # answered again), queued, taken, forwarded: no new message.
            return []
        room_id = _id(payload.get("_id"))
        visitor = _as_dict(payload.get("visitor"))
        messages = payload.get("messages")
        if not isinstance(messages, list):
            messages = []
        if room_id is None:
            return []
        found = []
        for item in messages:
            if not isinstance(item, dict) or item.get("agentId"):
                continue
            if item.get("navigation") is not None or item.get("closingMessage"):
                # The chat's closing comment (written by the visitor when they close it), or
                # a page they opened ("<title> - <url>", written by rocket.cat, so with an
                # agentId already): nothing said to the bot.
                continue
            author = _as_dict(item.get("u"))
            user_name = item.get("username") or author.get("username")
            user_id = _id(visitor.get("_id")) or _id(author.get("_id")) or _id(user_name)
            if self._is_own(user_name, author.get("_id")) or not isinstance(item.get("msg"), str):
                continue
            if user_id is not None:
                message_id = _message_id(item.get("_id"), item["msg"], bool(item.get("editedAt")))
                message = self._message(room_id, user_id, item["msg"], message_id)
                found.append((message_id, message))
        return found

    def _message(
        self,
        room_id: str,
        user_id: str,
        text: str,
        message_id: str | None,
        thread: str | None = None,
    ) -> UserMessage:
        message = UserMessage(
            text=text.strip(),
            sender_id=conversation_id(room_id, user_id),
            input_channel=self.name,
            output_channel=RocketChatOutput(self.api, room_id, thread),
        )
        if message_id is not None:
            # Stored as the user event's message_id: a retry that another worker (or this
            # one after a restart) receives finds it in the conversation and is ignored.
            message.message_id, message.once = message_id, True
        return message


def _token_holder(raw: bytes) -> dict[str, Any]:
    """A body our reader refuses (NaN, 1e400, an unpaired surrogate escape, nesting too
    deep) read leniently, for its token alone: the object, or {} when it is none."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _taken() -> Response:
    """The webhook's answer to a call it took, a message or not: a body, which Rocket.Chat 6
    needs (an empty answer is a failed call to it, retried 0.1 s, 1 s, 10 s... later), and
    no `text` or `attachments`, which it would post in the room."""
    return Response(b'{"success":true}', status_code=200, media_type="application/json")


def _server_url(c: dict[str, Any]) -> str:
    """`server_url`, whose scheme decides between http and https. Rasa's example credentials
    also set `ssl`, which no Rasa version read: said so when it asks for the other scheme."""
    wants_tls: bool | None = None
    if c.get("ssl") is not None:
        try:
            wants_tls = settings.flag(c, "ssl")
        except InvalidConfig:
            logger.warning("rocketchat: 'ssl' in credentials.yml is not read (nor by Rasa)")
    try:
        url = settings.http_url(c, "server_url")
    except InvalidConfig as e:
        written = c.get("server_url")
        if isinstance(written, str) and "://" not in written and "${" not in written:
            # Rasa's example: `server_url: "localhost:3000"` with `ssl: false`.
            scheme = "http" if wants_tls is False else "https"
            # without a user and password; `//host` (scheme-relative) given one scheme's slashes
            shown = safe_url(written, tolerant=True).lstrip("/")
            raise InvalidConfig(f"{e}; write '{scheme}://{shown}'") from None
        raise
    uses_tls = url.lower().startswith("https://")
    if wants_tls is not None and wants_tls != uses_tls:
        shown = safe_url(url, tolerant=True)
        if uses_tls:
            how = "over https"
        else:
            how = "over plain http: the bot's password goes unencrypted; write https:// for TLS"
        logger.warning(
            "rocketchat: 'ssl: %s' in credentials.yml is not read (nor by Rasa, whose example "
            "sets it): the scheme of server_url decides, and %s is used %s",
            str(wants_tls).lower(),
            shown,
            how,
        )
    return url


# Rocket.Chat's ids are 17 characters; a longer one (anyone may post webhooks when no
# `webhook_token` is set) is remembered and stored as its digest, not up to the body's 10 MB.
_MAX_MESSAGE_ID = 64


def _message_id(value: Any, text: str, edited: bool) -> str | None:
    """The id a message is known by (its retries ignored by): Rocket.Chat's, or for an
    edited message (sent again with its id, the outgoing webhook's `isEdited`) that id and
    the new text's digest, so that each edit is a message of its own, as in Rasa."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > _MAX_MESSAGE_ID:
        value = f"digest.{_digest(value)}"
    if edited:
        return f"{value}.edit.{_digest(text)[:16]}"
    return value


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# What may follow a trigger word that stands alone: a space (of any kind) or one of these.
_AFTER_TRIGGER_WORD = ":,\uff1a\uff0c\u3001"  # and the full-width colon, comma, ideographic comma


def _without_trigger_word(text: str, word: Any) -> str:
    """`text` without the outgoing webhook's trigger word it starts with (`@bot hi` → `hi`):
    it calls the bot, it says nothing to it. A text of the word alone is kept, and so is one
    where the word only begins a longer one (Rocket.Chat matches the start of the text:
    `@bots`, `@bot.dev`, `@bot's`), which is followed by neither a space nor a `:` or `,`."""
    if not isinstance(word, str) or not word or not text.startswith(word):
        return text
    rest = text[len(word) :]
    if rest[:1] and not rest[:1].isspace() and rest[:1] not in _AFTER_TRIGGER_WORD:
        return text
    rest = rest.lstrip().lstrip(_AFTER_TRIGGER_WORD).lstrip()
    return rest if rest else text


def _id(value: Any) -> str | None:
    """A Rocket.Chat id (of a room, a user, a thread): a string that is not empty. Anything
    else is none: an object's Python text named a conversation and a room to post to."""
    return value if isinstance(value, str) and value else None


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
