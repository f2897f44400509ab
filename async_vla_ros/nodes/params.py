"""Node parameters declared once, in one table per node, validated at start.

Every node lists its parameters as :class:`Param` rows (name, default, description, range or
choices). :func:`declare_params` declares them on an rclpy node with a full
``ParameterDescriptor`` (type, range, description: visible to ``ros2 param describe``), reads the
values (defaults, ``--params-file``, ``-p k:=v`` or ``parameter_overrides``) and validates them
all. Every problem is collected and raised together as one :class:`ParamError`; the node's
``main`` turns it into a clear message and exit status 2 (never a traceback mid-run).

Parameters are read-only once the node runs, except rows marked ``dynamic`` (experiment and
fault-injection knobs): :func:`enable_runtime_updates` validates a runtime ``set_parameters``
with the same rules and rejects a bad value with its reason.

Doubles accept integer overrides (``-p rate_hz:=100`` types as an integer on the command line).
This module imports rclpy lazily so its pure parts (``Param``, ``validate_values``) are usable
without ROS.
"""

from __future__ import annotations

import array
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "ParamError", "validate_values", "declare_params", "enable_runtime_updates", "params_help"]

_SCALARS = (bool, int, float, str)


class ParamError(ValueError):
    """One or more node parameters are invalid; ``problems`` lists each one."""

    def __init__(self, node: str, problems: Sequence[str]) -> None:
        self.node = node
        self.problems = list(problems)
        super().__init__(f"invalid parameters for node '{node}':\n  - " + "\n  - ".join(self.problems))


@dataclass(frozen=True)
class Param:
    """One parameter row: the type is the type of ``default`` (list -> array of its element type)."""

    name: str
    default: Any  # bool | int | float | str | list[float] | list[str] | list[int]
    description: str
    min: float | None = None  # inclusive lower bound (numbers; arrays: every element)
    max: float | None = None  # inclusive upper bound
    choices: tuple[str, ...] | None = None  # allowed values (strings)
    elem: type | None = None  # element type for an empty list default
    dynamic: bool = False  # may be changed at runtime (set_parameters, validated like at start)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("Param.name must be a non-empty string")
        if isinstance(self.default, (list, tuple)):
            if not self.default and self.elem is None:
                raise ValueError(f"Param {self.name}: an empty list default needs elem=")
            object.__setattr__(self, "default", list(self.default))
        elif not isinstance(self.default, _SCALARS):
            raise ValueError(f"Param {self.name}: unsupported default type {type(self.default).__name__}")
        problems = _check(self, self.default)
        if problems:
            raise ValueError(f"Param {self.name}: default {self.default!r} is invalid: {problems}")

    @property
    def kind(self) -> type:
        """Scalar type (bool, int, float, str) or list."""
        return list if isinstance(self.default, list) else type(self.default)

    @property
    def element_type(self) -> type | None:
        if not isinstance(self.default, list):
            return None
        if self.elem is not None:
            return self.elem
        return type(self.default[0])

    def describe(self) -> str:
        """Description with the allowed range, as shown by ``ros2 param describe``."""
        extra = []
        if self.min is not None or self.max is not None:
            extra.append(
                f"range [{'-inf' if self.min is None else self.min}, {'inf' if self.max is None else self.max}]"
            )
        if self.choices:
            extra.append("one of " + ", ".join(self.choices))
        if self.dynamic:
            extra.append("settable at runtime")
        return self.description + (f" ({'; '.join(extra)})" if extra else "")


def _coerce(p: Param, value: Any) -> tuple[Any, str | None]:
    """Value converted to the parameter's type, or an error."""
    kind = p.kind
    if kind is bool:
        return (value, None) if isinstance(value, bool) else (value, f"must be a bool, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"must be an integer, got {value!r}"
        return value, None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"must be a number, got {value!r}"
        return float(value), None
    if kind is str:
        return (value, None) if isinstance(value, str) else (value, f"must be a string, got {value!r}")
    et = p.element_type
    if not isinstance(value, (list, tuple)):
        return value, f"must be a list of {et.__name__}, got {value!r}"
    out = []
    for v in value:
        if et is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(float(v))
        elif et is int and isinstance(v, int) and not isinstance(v, bool):
            out.append(v)
        elif et is str and isinstance(v, str):
            out.append(v)
        elif et is bool and isinstance(v, bool):
            out.append(v)
        else:
            return value, f"must be a list of {et.__name__}, got element {v!r}"
    return out, None


def _check(p: Param, value: Any) -> list[str]:
    value, err = _coerce(p, value)
    if err:
        return [err]
    problems = []
    nums = value if isinstance(value, list) else [value]
    if p.kind in (int, float) or p.element_type in (int, float):
        for v in nums:
            if isinstance(v, float) and not math.isfinite(v):
                problems.append(f"must be finite, got {v!r}")
            elif p.min is not None and v < p.min:
                problems.append(f"must be >= {p.min}, got {v!r}")
            elif p.max is not None and v > p.max:
                problems.append(f"must be <= {p.max}, got {v!r}")
    if p.choices is not None:
        for v in nums:
            if v not in p.choices:
                close = difflib.get_close_matches(str(v), list(p.choices), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"must be one of {', '.join(p.choices)}, got {v!r}{hint}")
    return problems


def validate_values(node: str, table: Sequence[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``values`` (name -> raw value) against ``table``; returns coerced values.

    Unknown names are an error with a "did you mean". Raises :class:`ParamError` listing every
    problem.
    """
    by_name = {p.name: p for p in table}
    problems: list[str] = []
    for name in values:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{name}: unknown parameter{hint}")
    out: dict[str, Any] = {}
    for p in table:
        raw = values.get(p.name, p.default)
        errs = _check(p, raw)
        if errs:
            problems.extend(f"{p.name}: {e}" for e in errs)
        else:
            out[p.name] = _coerce(p, raw)[0]
    if problems:
        raise ParamError(node, problems)
    return out


def _descriptor(p: Param):
    from rcl_interfaces.msg import ParameterDescriptor, ParameterType

    types = {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
    }
    arrays = {
        bool: ParameterType.PARAMETER_BOOL_ARRAY,
        int: ParameterType.PARAMETER_INTEGER_ARRAY,
        float: ParameterType.PARAMETER_DOUBLE_ARRAY,
        str: ParameterType.PARAMETER_STRING_ARRAY,
    }
    d = ParameterDescriptor(description=p.describe(), read_only=not p.dynamic)
    d.type = arrays[p.element_type] if p.kind is list else types[p.kind]
    numeric = p.kind if p.kind is not list else p.element_type
    # doubles (and double arrays) accept integer overrides: typed dynamically, checked by us.
    # Ranges are checked by validate_values (one message style for every problem) and shown in
    # the description and additional_constraints rather than as rclpy range constraints.
    d.dynamic_typing = numeric is float
    if p.min is not None or p.max is not None:
        d.additional_constraints = f"range [{'-inf' if p.min is None else p.min}, {'inf' if p.max is None else p.max}]"
    if p.choices:
        d.additional_constraints = "one of: " + ", ".join(p.choices)
    return d


def declare_params(node, table: Sequence[Param]) -> dict[str, Any]:
    """Declare every row on ``node``, read and validate the values; returns name -> value.

    Raises :class:`ParamError` with every problem (type mismatch, range, choice, and overrides
    given for names that are not in the table).
    """
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    raw: dict[str, Any] = {}
    problems: list[str] = []
    for p in table:
        try:
            if p.kind is list and not p.default:
                ptype = {
                    str: Parameter.Type.STRING_ARRAY,
                    float: Parameter.Type.DOUBLE_ARRAY,
                    int: Parameter.Type.INTEGER_ARRAY,
                    bool: Parameter.Type.BOOL_ARRAY,
                }[p.element_type]
                param = node.declare_parameter(p.name, ptype, _descriptor(p))
                value = param.value if param.type_ != Parameter.Type.NOT_SET else []
            else:
                value = node.declare_parameter(p.name, p.default, _descriptor(p)).value
            raw[p.name] = list(value) if isinstance(value, (list, tuple, array.array)) else value
        except ParameterException as exc:
            problems.append(f"{p.name}: {exc}")
    # overrides for parameters this node does not have (a typo in a params file or -p)
    declared = {p.name for p in table} | {"use_sim_time", "start_type_description_service"}
    for name in getattr(node, "_parameter_overrides", {}):
        if name not in declared:
            close = difflib.get_close_matches(name, [p.name for p in table], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{name}: unknown parameter{hint}")
    try:
        values = validate_values(node.get_name(), table, raw)
    except ParamError as exc:
        problems.extend(exc.problems)
        values = {}
    if problems:
        raise ParamError(node.get_name(), problems)
    return values


def enable_runtime_updates(
    node, table: Sequence[Param], values: dict[str, Any], on_change: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """Let ``set_parameters`` change the ``dynamic`` rows of ``table`` at runtime.

    rclpy itself rejects read-only parameters ("Trying to set a read-only parameter") and wrong
    types of non-dynamic-typed ones; this callback checks every requested value with the same
    rules as at start (:func:`validate_values`: type, range, choices, finite) and rejects the
    whole request with the reasons when one is bad. Accepted values are written into ``values``
    (the node's parameter dict, read by its threads; one assignment per key) and handed to
    ``on_change`` (name -> coerced value).
    """
    from rcl_interfaces.msg import SetParametersResult

    by_name = {p.name: p for p in table}

    def callback(params) -> SetParametersResult:
        problems: list[str] = []
        accepted: dict[str, Any] = {}
        for param in params:
            row = by_name.get(param.name)
            if row is None:
                continue  # use_sim_time and other rclpy parameters: rclpy's own rules
            if not row.dynamic:
                problems.append(f"{param.name}: read-only (set it at start)")
                continue
            errs = _check(row, param.value)
            if errs:
                problems.extend(f"{param.name}: {e}" for e in errs)
            else:
                accepted[param.name] = _coerce(row, param.value)[0]
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        values.update(accepted)
        if on_change is not None and accepted:
            on_change(accepted)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(callback)


def params_help(table: Sequence[Param]) -> str:
    """A human-readable table of the parameters (for docs and ``--help``)."""
    rows = [
        f"  {p.name} ({p.kind.__name__ if p.kind is not list else 'list[' + p.element_type.__name__ + ']'}, "
        f"default {p.default!r}): {p.describe()}"
        for p in table
    ]
    return "\n".join(rows)
