from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Rule(_message.Message):
    __slots__ = ("name", "values", "bias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[str]
    bias: float
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., bias: _Optional[float] = ...) -> None: ...

class DateRange(_message.Message):
    __slots__ = ("name", "before", "after")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    before: str
    after: str
    def __init__(self, name: _Optional[str] = ..., before: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("app", "user", "user_bias", "item", "item_bias", "item_set", "item_set_bias", "fields", "date_range", "current_date", "blacklist_items", "return_self", "num", "event_names", "with_ranks")
    APP_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    USER_BIAS_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    ITEM_BIAS_FIELD_NUMBER: _ClassVar[int]
    ITEM_SET_FIELD_NUMBER: _ClassVar[int]
    ITEM_SET_BIAS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DATE_RANGE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_DATE_FIELD_NUMBER: _ClassVar[int]
    BLACKLIST_ITEMS_FIELD_NUMBER: _ClassVar[int]
    RETURN_SELF_FIELD_NUMBER: _ClassVar[int]
    NUM_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAMES_FIELD_NUMBER: _ClassVar[int]
    WITH_RANKS_FIELD_NUMBER: _ClassVar[int]
    app: str
    user: str
    user_bias: float
    item: str
    item_bias: float
    item_set: _containers.RepeatedScalarFieldContainer[str]
    item_set_bias: float
    fields: _containers.RepeatedCompositeFieldContainer[Rule]
    date_range: DateRange
    current_date: str
    blacklist_items: _containers.RepeatedScalarFieldContainer[str]
    return_self: bool
    num: int
    event_names: _containers.RepeatedScalarFieldContainer[str]
    with_ranks: bool
    def __init__(self, app: _Optional[str] = ..., user: _Optional[str] = ..., user_bias: _Optional[float] = ..., item: _Optional[str] = ..., item_bias: _Optional[float] = ..., item_set: _Optional[_Iterable[str]] = ..., item_set_bias: _Optional[float] = ..., fields: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., date_range: _Optional[_Union[DateRange, _Mapping]] = ..., current_date: _Optional[str] = ..., blacklist_items: _Optional[_Iterable[str]] = ..., return_self: _Optional[bool] = ..., num: _Optional[int] = ..., event_names: _Optional[_Iterable[str]] = ..., with_ranks: _Optional[bool] = ..., **kwargs) -> None: ...

class ItemScore(_message.Message):
    __slots__ = ("item", "score", "ranks")
    class RanksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    item: str
    score: float
    ranks: _containers.ScalarMap[str, float]
    def __init__(self, item: _Optional[str] = ..., score: _Optional[float] = ..., ranks: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("item_scores", "model_version", "backfill", "partial")
    ITEM_SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    item_scores: _containers.RepeatedCompositeFieldContainer[ItemScore]
    model_version: str
    backfill: bool
    partial: bool
    def __init__(self, item_scores: _Optional[_Iterable[_Union[ItemScore, _Mapping]]] = ..., model_version: _Optional[str] = ..., backfill: _Optional[bool] = ..., partial: _Optional[bool] = ...) -> None: ...
