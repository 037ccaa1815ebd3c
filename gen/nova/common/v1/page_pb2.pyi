from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PageRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class PageResponse(_message.Message):
    __slots__ = ("next_page_token", "item_tokens")
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ITEM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    item_tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, next_page_token: _Optional[str] = ..., item_tokens: _Optional[_Iterable[str]] = ...) -> None: ...
