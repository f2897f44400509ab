"""Convert ROS messages to plain Python data (dicts, lists, numbers) for logs, JSON and tests.

``rosidl_runtime_py`` is not shipped as a PyPI wheel, so this small recursive converter uses the
generated classes' own field table (``get_fields_and_field_types``).
"""

from __future__ import annotations

import array
from typing import Any


def message_to_dict(msg: Any) -> dict[str, Any]:
    """Every field of ``msg`` (recursively) as plain Python values; arrays become lists."""
    if not hasattr(msg, "get_fields_and_field_types"):
        raise TypeError(f"not a ROS message: {type(msg).__name__}")
    return {name: _plain(getattr(msg, name)) for name in msg.get_fields_and_field_types()}


def _plain(value: Any) -> Any:
    if hasattr(value, "get_fields_and_field_types"):
        return message_to_dict(value)
    if isinstance(value, (list, tuple, array.array)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays of fixed-size fields
        return value.tolist()
    return value
