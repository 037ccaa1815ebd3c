"""DateTime: protobuf Timestamps as RFC 3339 text."""

from ariadne import ScalarType
from google.protobuf.timestamp_pb2 import Timestamp

date_time = ScalarType("DateTime")


@date_time.serializer
def serialize_date_time(value: Timestamp) -> str:
    return value.ToJsonString()
