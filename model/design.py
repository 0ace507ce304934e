"""The design of a class-size experiment: who is in it and how classes are formed.

A :class:`Design` holds what an experimenter fixes before any score is seen: the
cohort sizes, the race codes, the income range, the class-size targets and the
number of schools.  It is what a fit needs; a simulation needs it and the parameter
values too (:class:`~classsize.model.config.Config`, whose design is ``config.design``).
Its defaults are the notebook's design, and it is frozen and validated on
construction: a broken rule raises :class:`ConfigError`, one line naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .format import KNOWN_RACE_CODES

#: The fields of :class:`Design`, in the order a configuration file lists them.
DESIGN_FIELDS = ("n_regular", "n_experimental", "race_codes", "income_min", "income_max", "small_class_size",
                 "large_class_size", "n_schools")
#: The fields that hold integers.
INT_FIELDS = frozenset({"n_regular", "n_experimental", "income_min", "income_max", "n_schools"})
#: The largest value of an integer field (the arrays of the model hold 32-bit integers).
INT_FIELD_MAX = 2**31 - 1


class ConfigError(ValueError):
    """A design or configuration breaks a rule; the message is one line naming the field."""


@dataclass(frozen=True)
class Design:
    """The design: ``n_regular`` REGULAR and ``n_experimental`` EXPERIMENTAL students of
    the races ``race_codes``, incomes in ``[income_min, income_max)``, classes of about
    ``small_class_size`` (SMALL) and ``large_class_size`` (LARGE) students, spread over
    ``n_schools`` schools."""

    #: the cohorts: REGULAR students (class sizes by the assignment rule) and
    #: EXPERIMENTAL students (class sizes by a coin)
    n_regular: int = 4000
    n_experimental: int = 2000
    #: the race codes students are recorded with
    race_codes: tuple[str, ...] = ("WHITE", "BLACK", "HISPANIC", "ASIAN")
    #: family incomes are whole numbers in [income_min, income_max)
    income_min: int = 30000
    income_max: int = 150000
    #: the class-size targets: each size's students fill floor(n / size) classes
    small_class_size: float = 15.0
    large_class_size: float = 30.0
    #: the schools classes are spread over
    n_schools: int = 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "race_codes", tuple(self.race_codes))
        _validate(self)

    @property
    def n_students(self) -> int:
        return self.n_regular + self.n_experimental

    @property
    def max_small_classes(self) -> int:
        """Most SMALL classes any dataset can have (every student in a SMALL class)."""
        return max(1, math.floor(self.n_students / self.small_class_size))

    @property
    def max_large_classes(self) -> int:
        return max(1, math.floor(self.n_students / self.large_class_size))

    @property
    def design(self) -> "Design":
        """The design alone (itself; a :class:`~classsize.model.Config` drops its parameters)."""
        return self

    def replace(self, **changes: Any) -> "Design":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------- rules
def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check(cond: bool, name: str, rule: str, value: Any) -> None:
    """Raise :class:`ConfigError` ``field 'name' rule (got value)`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"field '{name}' {rule} (got {value!r})")


def finite(name: str, value: Any) -> None:
    check(is_number(value) and math.isfinite(value), name, "must be a finite number", value)


def _validate(d: Design) -> None:
    for name in DESIGN_FIELDS:
        v = getattr(d, name)
        if name in INT_FIELDS:
            check(isinstance(v, int) and not isinstance(v, bool), name, "must be an integer", v)
            check(v <= INT_FIELD_MAX, name, f"must be at most {INT_FIELD_MAX}", v)
        elif isinstance(v, (int, float)):
            finite(name, v)
    check(d.n_regular >= 0, "n_regular", "must be >= 0", d.n_regular)
    check(d.n_experimental >= 0, "n_experimental", "must be >= 0", d.n_experimental)
    check(d.n_students > 0, "n_regular", "plus n_experimental must be > 0", d.n_students)
    check(len(d.race_codes) > 0, "race_codes", "must name at least one race", d.race_codes)
    for code in d.race_codes:
        check(code in KNOWN_RACE_CODES, "race_codes", f"has an unknown race code; known: {', '.join(KNOWN_RACE_CODES)}",
              code)
    check(len(set(d.race_codes)) == len(d.race_codes), "race_codes", "must not repeat a code", d.race_codes)
    check(d.income_min > 0, "income_min", "must be > 0 (income enters through its logarithm)", d.income_min)
    check(d.income_max > d.income_min, "income_max", "must be > income_min", d.income_max)
    for name in ("small_class_size", "large_class_size"):
        check(getattr(d, name) >= 1, name, "must be >= 1 (a class holds at least one student)", getattr(d, name))
        _at_most_students(d, name)
    check(d.n_schools > 0, "n_schools", "must be > 0", d.n_schools)
    _at_most_students(d, "n_schools")


def _at_most_students(d: Design, name: str) -> None:
    """A class size or a number of schools above the number of students means nothing
    (one class holds them all; schools stay empty): refused beyond that number, or
    beyond the field's default (the notebook's number) for designs smaller than it."""
    default = Design.__dataclass_fields__[name].default
    value = getattr(d, name)
    check(value <= max(d.n_students, default), name,
          f"must be at most the number of students (n_regular + n_experimental = {d.n_students}) "
          f"or the notebook's {default:g}, whichever is larger", value)
