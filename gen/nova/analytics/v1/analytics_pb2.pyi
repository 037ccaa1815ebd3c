import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Impression(_message.Message):
    __slots__ = ("post_id", "viewed_at", "dwell_ms")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    VIEWED_AT_FIELD_NUMBER: _ClassVar[int]
    DWELL_MS_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    viewed_at: _timestamp_pb2.Timestamp
    dwell_ms: int
    def __init__(self, post_id: _Optional[str] = ..., viewed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dwell_ms: _Optional[int] = ...) -> None: ...

class PostMetrics(_message.Message):
    __slots__ = ("post_id", "views", "likes", "comments")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    LIKES_FIELD_NUMBER: _ClassVar[int]
    COMMENTS_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    views: int
    likes: int
    comments: int
    def __init__(self, post_id: _Optional[str] = ..., views: _Optional[int] = ..., likes: _Optional[int] = ..., comments: _Optional[int] = ...) -> None: ...

class RecordImpressionsRequest(_message.Message):
    __slots__ = ("impressions",)
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    impressions: _containers.RepeatedCompositeFieldContainer[Impression]
    def __init__(self, impressions: _Optional[_Iterable[_Union[Impression, _Mapping]]] = ...) -> None: ...

class RecordImpressionsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class BatchGetPostMetricsRequest(_message.Message):
    __slots__ = ("post_ids",)
    POST_IDS_FIELD_NUMBER: _ClassVar[int]
    post_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, post_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetPostMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[PostMetrics]
    def __init__(self, metrics: _Optional[_Iterable[_Union[PostMetrics, _Mapping]]] = ...) -> None: ...

class GetTrendingPostsRequest(_message.Message):
    __slots__ = ("window_seconds", "limit")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    window_seconds: int
    limit: int
    def __init__(self, window_seconds: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class GetTrendingPostsResponse(_message.Message):
    __slots__ = ("posts",)
    POSTS_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[PostMetrics]
    def __init__(self, posts: _Optional[_Iterable[_Union[PostMetrics, _Mapping]]] = ...) -> None: ...

class GetActiveUsersRequest(_message.Message):
    __slots__ = ("window_seconds",)
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    window_seconds: int
    def __init__(self, window_seconds: _Optional[int] = ...) -> None: ...

class GetActiveUsersResponse(_message.Message):
    __slots__ = ("active_users",)
    ACTIVE_USERS_FIELD_NUMBER: _ClassVar[int]
    active_users: int
    def __init__(self, active_users: _Optional[int] = ...) -> None: ...
