import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nova.common.v1 import page_pb2 as _page_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Post(_message.Message):
    __slots__ = ("id", "author_id", "text", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    author_id: str
    text: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., author_id: _Optional[str] = ..., text: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Comment(_message.Message):
    __slots__ = ("id", "post_id", "author_id", "text", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    post_id: str
    author_id: str
    text: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., post_id: _Optional[str] = ..., author_id: _Optional[str] = ..., text: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PostStats(_message.Message):
    __slots__ = ("post_id", "like_count", "comment_count", "viewer_has_liked")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    LIKE_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    VIEWER_HAS_LIKED_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    like_count: int
    comment_count: int
    viewer_has_liked: bool
    def __init__(self, post_id: _Optional[str] = ..., like_count: _Optional[int] = ..., comment_count: _Optional[int] = ..., viewer_has_liked: _Optional[bool] = ...) -> None: ...

class PostComments(_message.Message):
    __slots__ = ("post_id", "comments")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    COMMENTS_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    comments: _containers.RepeatedCompositeFieldContainer[Comment]
    def __init__(self, post_id: _Optional[str] = ..., comments: _Optional[_Iterable[_Union[Comment, _Mapping]]] = ...) -> None: ...

class CreatePostRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class CreatePostResponse(_message.Message):
    __slots__ = ("post",)
    POST_FIELD_NUMBER: _ClassVar[int]
    post: Post
    def __init__(self, post: _Optional[_Union[Post, _Mapping]] = ...) -> None: ...

class GetPostRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetPostResponse(_message.Message):
    __slots__ = ("post",)
    POST_FIELD_NUMBER: _ClassVar[int]
    post: Post
    def __init__(self, post: _Optional[_Union[Post, _Mapping]] = ...) -> None: ...

class BatchGetPostsRequest(_message.Message):
    __slots__ = ("ids", "include_stats", "comments_per_post")
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STATS_FIELD_NUMBER: _ClassVar[int]
    COMMENTS_PER_POST_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_stats: bool
    comments_per_post: int
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., include_stats: _Optional[bool] = ..., comments_per_post: _Optional[int] = ...) -> None: ...

class BatchGetPostsResponse(_message.Message):
    __slots__ = ("posts", "missing_ids", "stats", "comments")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    COMMENTS_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[Post]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    stats: _containers.RepeatedCompositeFieldContainer[PostStats]
    comments: _containers.RepeatedCompositeFieldContainer[PostComments]
    def __init__(self, posts: _Optional[_Iterable[_Union[Post, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ..., stats: _Optional[_Iterable[_Union[PostStats, _Mapping]]] = ..., comments: _Optional[_Iterable[_Union[PostComments, _Mapping]]] = ...) -> None: ...

class DeletePostRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeletePostResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListUserPostsRequest(_message.Message):
    __slots__ = ("user_id", "page")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page: _page_pb2.PageRequest
    def __init__(self, user_id: _Optional[str] = ..., page: _Optional[_Union[_page_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListUserPostsResponse(_message.Message):
    __slots__ = ("posts", "page")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[Post]
    page: _page_pb2.PageResponse
    def __init__(self, posts: _Optional[_Iterable[_Union[Post, _Mapping]]] = ..., page: _Optional[_Union[_page_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class ListPostsByAuthorsRequest(_message.Message):
    __slots__ = ("author_ids", "page")
    AUTHOR_IDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    author_ids: _containers.RepeatedScalarFieldContainer[str]
    page: _page_pb2.PageRequest
    def __init__(self, author_ids: _Optional[_Iterable[str]] = ..., page: _Optional[_Union[_page_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListPostsByAuthorsResponse(_message.Message):
    __slots__ = ("posts", "page")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[Post]
    page: _page_pb2.PageResponse
    def __init__(self, posts: _Optional[_Iterable[_Union[Post, _Mapping]]] = ..., page: _Optional[_Union[_page_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class CreateCommentRequest(_message.Message):
    __slots__ = ("post_id", "text")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    text: str
    def __init__(self, post_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class CreateCommentResponse(_message.Message):
    __slots__ = ("comment",)
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    comment: Comment
    def __init__(self, comment: _Optional[_Union[Comment, _Mapping]] = ...) -> None: ...

class BatchListCommentsRequest(_message.Message):
    __slots__ = ("post_ids", "limit_per_post")
    POST_IDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PER_POST_FIELD_NUMBER: _ClassVar[int]
    post_ids: _containers.RepeatedScalarFieldContainer[str]
    limit_per_post: int
    def __init__(self, post_ids: _Optional[_Iterable[str]] = ..., limit_per_post: _Optional[int] = ...) -> None: ...

class BatchListCommentsResponse(_message.Message):
    __slots__ = ("posts", "missing_ids")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[PostComments]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, posts: _Optional[_Iterable[_Union[PostComments, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LikePostRequest(_message.Message):
    __slots__ = ("post_id",)
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    def __init__(self, post_id: _Optional[str] = ...) -> None: ...

class LikePostResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    def __init__(self, changed: _Optional[bool] = ...) -> None: ...

class UnlikePostRequest(_message.Message):
    __slots__ = ("post_id",)
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    def __init__(self, post_id: _Optional[str] = ...) -> None: ...

class UnlikePostResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    def __init__(self, changed: _Optional[bool] = ...) -> None: ...

class BatchGetPostStatsRequest(_message.Message):
    __slots__ = ("post_ids",)
    POST_IDS_FIELD_NUMBER: _ClassVar[int]
    post_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, post_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetPostStatsResponse(_message.Message):
    __slots__ = ("stats", "missing_ids")
    STATS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[PostStats]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stats: _Optional[_Iterable[_Union[PostStats, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ...) -> None: ...
