from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_KIND_UNSPECIFIED: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_VIEWED: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_LIKED: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_HIDDEN: _ClassVar[FeedbackKind]
FEEDBACK_KIND_UNSPECIFIED: FeedbackKind
FEEDBACK_KIND_VIEWED: FeedbackKind
FEEDBACK_KIND_LIKED: FeedbackKind
FEEDBACK_KIND_HIDDEN: FeedbackKind

class Recommendation(_message.Message):
    __slots__ = ("id", "score", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    reason: str
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class GetRecommendedPostsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class GetRecommendedPostsResponse(_message.Message):
    __slots__ = ("posts", "variant")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[Recommendation]
    variant: str
    def __init__(self, posts: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ..., variant: _Optional[str] = ...) -> None: ...

class GetSuggestedUsersRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class GetSuggestedUsersResponse(_message.Message):
    __slots__ = ("users",)
    USERS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[Recommendation]
    def __init__(self, users: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("post_id", "kind")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    kind: FeedbackKind
    def __init__(self, post_id: _Optional[str] = ..., kind: _Optional[_Union[FeedbackKind, str]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
