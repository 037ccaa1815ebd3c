"""gRPC surface of nova.user.v1.UserService: validate, call the repository, build protos."""

import logging
import re
import uuid
import zoneinfo
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from nova.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.auth import Caller, TokenCodec, caller_or_none, require_caller
from services.runtime.errors import InvalidArgument, Refused, Unauthenticated
from services.runtime.ids import new_id
from services.runtime.pagination import paginate, read_page
from services.runtime.tenancy.current import current_tenant
from services.runtime.timestamps import to_timestamp
from services.runtime.validation import check_text, parse_id, parse_ids
from services.user.cache import CachedPreferences
from services.user.passwords import Passwords
from services.user.repository import (
    PREFERENCE_FIELDS,
    PreferencesRecord,
    UserRecord,
    UserRepository,
)
from services.user.sign_in_limits import SignInLimits

log = logging.getLogger("nova.user")

Context = aio.ServicerContext[Any, Any]

MAX_BATCH_GET_USERS = 100
"""BatchGetUsers answers at most this many ids per call (the proto documents it)."""

_HANDLE = re.compile(r"[A-Za-z0-9_]{3,30}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


class UserServicer(user_pb2_grpc.UserServiceServicer):
    def __init__(
        self,
        repository: UserRepository,
        passwords: Passwords,
        tokens: TokenCodec,
        limits: SignInLimits,
        *,
        preferences: CachedPreferences | None = None,
    ):
        self._users = repository
        self._passwords = passwords
        self._tokens = tokens
        self._limits = limits
        # None (no Redis, or NOVA_CACHE=off): preferences are read from PostgreSQL.
        self._cached_preferences = preferences

    async def CreateUser(
        self, request: user_pb2.CreateUserRequest, context: Context
    ) -> user_pb2.CreateUserResponse:
        handle = _check_handle(request.handle)
        email = request.email.strip()
        if not email:
            raise InvalidArgument("email is required")
        if len(email) > 254 or not _EMAIL.fullmatch(email):
            raise InvalidArgument(f"email {email[:254]!r} is not an e-mail address")
        if not 8 <= len(request.password) <= 128:
            raise InvalidArgument("password must be 8 to 128 characters long")
        display_name = check_text(
            request.display_name or handle, "display_name", minimum=1, maximum=80
        )
        self._limits.check_sign_up(context)
        user_id = new_id()
        user = await self._users.create_user(
            tenant_id=current_tenant(),
            user_id=user_id,
            handle=handle,
            email=email,
            password_hash=await self._passwords.hash(request.password),
            display_name=display_name,
        )
        return user_pb2.CreateUserResponse(user=_user_proto(user, viewer_id=user_id))

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: Context
    ) -> user_pb2.GetUserResponse:
        viewer = _viewer_id()
        lookup = request.WhichOneof("lookup")
        if lookup == "id":
            user = await self._users.get_user(
                tenant_id=current_tenant(), viewer_id=viewer, user_id=parse_id(request.id, "id")
            )
        elif lookup == "handle":
            user = await self._users.get_user(
                tenant_id=current_tenant(), viewer_id=viewer, handle=_check_handle(request.handle)
            )
        else:
            raise InvalidArgument("set either id or handle")
        return user_pb2.GetUserResponse(user=_user_proto(user, viewer_id=viewer))

    async def BatchGetUsers(
        self, request: user_pb2.BatchGetUsersRequest, context: Context
    ) -> user_pb2.BatchGetUsersResponse:
        ids = parse_ids(request.ids, "ids", maximum=MAX_BATCH_GET_USERS)
        viewer = _viewer_id()
        found = await self._users.get_users(
            tenant_id=current_tenant(), viewer_id=viewer, user_ids=ids
        )
        return user_pb2.BatchGetUsersResponse(
            users=[_user_proto(found[i], viewer_id=viewer) for i in ids if i in found],
            missing_ids=[str(i) for i in ids if i not in found],
        )

    async def UpdateProfile(
        self, request: user_pb2.UpdateProfileRequest, context: Context
    ) -> user_pb2.UpdateProfileResponse:
        caller = require_caller()
        display_name = bio = avatar_url = None
        if request.HasField("display_name"):
            display_name = check_text(request.display_name, "display_name", minimum=1, maximum=80)
        if request.HasField("bio"):
            bio = check_text(request.bio, "bio", minimum=0, maximum=300)
        if request.HasField("avatar_url"):
            avatar_url = _check_url(request.avatar_url, "avatar_url")
        if display_name is None and bio is None and avatar_url is None:
            raise InvalidArgument("set at least one of display_name, bio, avatar_url")
        user = await self._users.update_profile(
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            display_name=display_name,
            bio=bio,
            avatar_url=avatar_url,
        )
        return user_pb2.UpdateProfileResponse(user=_user_proto(user, viewer_id=caller.user_id))

    async def Follow(
        self, request: user_pb2.FollowRequest, context: Context
    ) -> user_pb2.FollowResponse:
        caller, target = _follow_target(request.user_id)
        changed = await self._users.follow(
            tenant_id=caller.tenant_id, follower_id=caller.user_id, followee_id=target
        )
        return user_pb2.FollowResponse(changed=changed)

    async def Unfollow(
        self, request: user_pb2.UnfollowRequest, context: Context
    ) -> user_pb2.UnfollowResponse:
        caller, target = _follow_target(request.user_id)
        changed = await self._users.unfollow(
            tenant_id=caller.tenant_id, follower_id=caller.user_id, followee_id=target
        )
        return user_pb2.UnfollowResponse(changed=changed)

    async def ListFollowing(
        self, request: user_pb2.ListFollowingRequest, context: Context
    ) -> user_pb2.ListFollowingResponse:
        users, page = await self._list(request, self._users.list_following)
        return user_pb2.ListFollowingResponse(users=users, page=page)

    async def ListFollowers(
        self, request: user_pb2.ListFollowersRequest, context: Context
    ) -> user_pb2.ListFollowersResponse:
        users, page = await self._list(request, self._users.list_followers)
        return user_pb2.ListFollowersResponse(users=users, page=page)

    async def _list(self, request: Any, fetch: Any) -> tuple[list[user_pb2.User], Any]:
        user_id = parse_id(request.user_id, "user_id")
        page = read_page(request.page)
        viewer = _viewer_id()
        rows = await fetch(
            tenant_id=current_tenant(),
            viewer_id=viewer,
            user_id=user_id,
            after=page.after,
            limit=page.size + 1,
        )
        kept, page_response = paginate(rows, page, key=lambda row: row[0])
        return [_user_proto(user, viewer_id=viewer) for _, user in kept], page_response

    async def GetPreferences(
        self, request: user_pb2.GetPreferencesRequest, context: Context
    ) -> user_pb2.GetPreferencesResponse:
        caller = require_caller()
        read = self._cached_preferences or self._users
        preferences = await read.get_preferences(tenant_id=caller.tenant_id, user_id=caller.user_id)
        return user_pb2.GetPreferencesResponse(preferences=_preferences_proto(preferences))

    async def UpdatePreferences(
        self, request: user_pb2.UpdatePreferencesRequest, context: Context
    ) -> user_pb2.UpdatePreferencesResponse:
        caller = require_caller()
        paths = list(request.update_mask.paths) or list(PREFERENCE_FIELDS)
        unknown = [path for path in paths if path not in PREFERENCE_FIELDS]
        if unknown:
            raise InvalidArgument(
                f"update_mask names unknown fields {', '.join(unknown)}; "
                f"Preferences has {', '.join(PREFERENCE_FIELDS)}"
            )
        changes = _check_preferences(request.preferences, paths)
        preferences = await self._users.update_preferences(
            tenant_id=caller.tenant_id, user_id=caller.user_id, changes=changes
        )
        if self._cached_preferences is not None:
            await self._cached_preferences.forget(
                tenant_id=caller.tenant_id, user_id=caller.user_id
            )
        return user_pb2.UpdatePreferencesResponse(preferences=_preferences_proto(preferences))

    async def Authenticate(
        self, request: user_pb2.AuthenticateRequest, context: Context
    ) -> user_pb2.AuthenticateResponse:
        login = request.login.strip()
        if not login or not request.password:
            raise InvalidArgument("login (a handle or e-mail) and password are required")
        if len(login) > 254 or len(request.password) > 128:
            raise InvalidArgument("login or password is longer than any account can have")
        self._limits.check_log_in(context, login)
        tenant_id = current_tenant()
        found = await self._users.find_credentials(tenant_id=tenant_id, login=login)
        user, password_hash = found if found else (None, None)
        if not await self._passwords.verify(password_hash, request.password) or user is None:
            raise Unauthenticated("wrong login or password")
        if password_hash is not None and self._passwords.is_weaker(password_hash):
            await self._rehash(tenant_id, user.id, password_hash, request.password)
        token, expires_at = self._tokens.issue(
            Caller(user_id=user.id, tenant_id=tenant_id, handle=user.handle)
        )
        expires = Timestamp()
        expires.FromDatetime(expires_at)
        return user_pb2.AuthenticateResponse(
            access_token=token, expires_at=expires, user=_user_proto(user, viewer_id=user.id)
        )

    async def _rehash(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, old_hash: str, password: str
    ) -> None:
        """Stores the password hashed with the current profile in place of a weaker hash:
        the only moment the service holds the password to do it. Best effort: when the
        hashing pool is full the log-in goes ahead and the next one tries again."""
        try:
            new_hash = await self._passwords.hash(password)
        except Refused:
            log.info("password of user %s not rehashed: hashing pool full", user_id)
            return
        await self._users.replace_password_hash(
            tenant_id=tenant_id, user_id=user_id, old_hash=old_hash, new_hash=new_hash
        )


def _viewer_id() -> uuid.UUID | None:
    caller = caller_or_none()
    return caller.user_id if caller else None


def _follow_target(user_id: str) -> tuple[Caller, uuid.UUID]:
    caller = require_caller()
    target = parse_id(user_id, "user_id")
    if target == caller.user_id:
        raise InvalidArgument("you cannot follow or unfollow yourself")
    return caller, target


def _check_handle(handle: str) -> str:
    handle = handle.strip().removeprefix("@")
    if not handle:
        raise InvalidArgument("handle is required")
    if not _HANDLE.fullmatch(handle):
        raise InvalidArgument(
            f"handle {handle[:40]!r} must be 3 to 30 letters, digits or underscores"
        )
    return handle


def _check_url(value: str, field: str) -> str:
    url = value.strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if len(url) > 500 or parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"{field} must be an http(s) URL of at most 500 characters, or empty")
    return url


def _check_preferences(proto: user_pb2.Preferences, paths: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for path in paths:
        if path == "language":
            if len(proto.language) > 35 or not _LANGUAGE.fullmatch(proto.language):
                raise InvalidArgument(
                    f"preferences.language {proto.language[:40]!r} is not a BCP 47 tag like 'en'"
                )
            changes[path] = proto.language
        elif path == "time_zone":
            try:
                zoneinfo.ZoneInfo(proto.time_zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
                # OSError: a key naming a folder of the tz database ("America"), or too
                # long a file name, which the tzdata package's reader raises as such.
                raise InvalidArgument(
                    f"preferences.time_zone {proto.time_zone[:60]!r} is not an IANA time zone "
                    "like 'Europe/Lisbon'"
                ) from None
            changes[path] = proto.time_zone
        elif path == "interests":
            if len(proto.interests) > 20:
                raise InvalidArgument("preferences.interests allows at most 20 topics")
            topics = [
                check_text(topic, f"preferences.interests[{i}]", minimum=1, maximum=40)
                for i, topic in enumerate(proto.interests)
            ]
            changes[path] = list(dict.fromkeys(topics))
        else:
            changes[path] = getattr(proto, path)
    return changes


def _user_proto(user: UserRecord, *, viewer_id: uuid.UUID | None) -> user_pb2.User:
    return user_pb2.User(
        id=str(user.id),
        handle=user.handle,
        display_name=user.display_name,
        bio=user.bio,
        avatar_url=user.avatar_url,
        created_at=to_timestamp(user.created_at),
        follower_count=user.follower_count,
        following_count=user.following_count,
        followed_by_viewer=user.followed_by_viewer,
        email=user.email if viewer_id == user.id else "",
    )


def _preferences_proto(preferences: PreferencesRecord) -> user_pb2.Preferences:
    return user_pb2.Preferences(
        language=preferences.language,
        time_zone=preferences.time_zone,
        email_notifications=preferences.email_notifications,
        interests=preferences.interests,
        show_sensitive_content=preferences.show_sensitive_content,
    )
