"""Partitions: definitions (time windows, static, dynamic, multi), keys and selectors.

Pure and synchronous. Every question — how many partitions, where is a key, which keys are on
this page of a selection — is answered by arithmetic on positions, never by enumerating a
definition; see docs/partitions.md for the decisions behind the semantics.
"""

from arcod.core.partitions.definitions import (
    FIELDS,
    KINDS,
    AnyPartitionsDefinition,
    parse_definition,
    parse_definitions,
)
from arcod.core.partitions.dynamic import DynamicPartitions, bind_dynamic_keys, with_dynamic_keys
from arcod.core.partitions.keys import MULTI_SEPARATOR, key_problem, validate_partition_key
from arcod.core.partitions.multi import DimensionDefinition, MultiPartitions, join_multi_key
from arcod.core.partitions.protocol import PartitionsDefinition
from arcod.core.partitions.selectors import (
    AllSelector,
    DimensionSelector,
    KeysSelector,
    MultiSelector,
    PartitionSelector,
    RangeSelector,
    format_selector,
    parse_selector,
    pin_as_of,
    selector_contains,
    selector_count,
    selector_from_dict,
    selector_slice,
    selector_to_dict,
    validate_selector,
)
from arcod.core.partitions.static import StaticPartitions
from arcod.core.partitions.time_windows import (
    DATE_FMT,
    HOURLY_FMT,
    POST_DST_SUFFIX,
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    TimeWindowPartitions,
    WeeklyPartitions,
)

__all__ = [
    "DATE_FMT",
    "FIELDS",
    "HOURLY_FMT",
    "KINDS",
    "MULTI_SEPARATOR",
    "POST_DST_SUFFIX",
    "AllSelector",
    "AnyPartitionsDefinition",
    "DailyPartitions",
    "DimensionDefinition",
    "DimensionSelector",
    "DynamicPartitions",
    "HourlyPartitions",
    "KeysSelector",
    "MonthlyPartitions",
    "MultiPartitions",
    "MultiSelector",
    "PartitionSelector",
    "PartitionsDefinition",
    "RangeSelector",
    "StaticPartitions",
    "TimeWindowPartitions",
    "WeeklyPartitions",
    "bind_dynamic_keys",
    "format_selector",
    "join_multi_key",
    "key_problem",
    "parse_definition",
    "parse_definitions",
    "parse_selector",
    "pin_as_of",
    "selector_contains",
    "selector_count",
    "selector_from_dict",
    "selector_slice",
    "selector_to_dict",
    "validate_partition_key",
    "validate_selector",
    "with_dynamic_keys",
]
