"""The configuration of the class-size experiment: every number of the original notebook.

A :class:`Config` is frozen and validated on construction.  Its defaults are the
notebook's numbers, so ``Config()`` is the notebook's experiment.  It is read from
and written to TOML with flat keys named after the fields::

    n_regular = 4000
    small_class_direct_effect = 0.0
    regular_small_race_shift = { WHITE = -0.25, ASIAN = -0.3 }

A configuration is a design (:class:`~classsize.model.design.Design`: cohorts,
races, income range, class sizes, schools; ``config.design``) and the parameter
values of the process, the truth a simulation draws from.  A fit needs the design
alone.  Every rule broken by a configuration raises :class:`ConfigError` (the
design's rules are :mod:`classsize.model.design`'s, the parameters' and the sizes'
are here) whose message is one line naming the field and the rule; it is imported
from here, where a configuration is read.  A configuration file must be UTF-8 text
(a byte-order mark allowed).

**Sizes.**  A configuration is refused before any work when one simulated dataset
could not be held in memory or could not fill its schools:

* ``n_regular + n_experimental <= MAX_STUDENTS`` (:data:`MAX_STUDENTS`, 10**7).  One
  dataset's student arrays take about :data:`BYTES_PER_STUDENT` bytes per student
  (the draws and the traced program's temporaries, measured at 103), so at most
  about 1.2 GiB.
* ``n_schools * class slots <= MAX_CLASS_SCHOOL_CELLS`` (2**27), with
  ``class slots = max_small_classes + max_large_classes`` (the padded ``classes``
  plate): drawing each class's school compares a float64 per class slot and school,
  so that array is at most 1 GiB.  One dataset then takes at most about 2.2 GiB
  (:attr:`Config.simulation_bytes` estimates it); a batch of ``k`` datasets, ``k``
  times that.
* ``n_schools <= max(most_classes, 20)``: no more schools than the most classes a
  dataset can have (:attr:`Config.most_classes`), or the notebook's 20 schools for
  designs smaller than that, so that the defaults stay valid for small designs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .design import DESIGN_FIELDS, INT_FIELDS, ConfigError, Design, check, finite, is_number


class FrozenDict(dict):
    """A read-only, hashable dict (keeps :class:`Config` hashable)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Config mappings are read-only; use Config.replace")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _readonly  # type: ignore


#: The distributions of the unobserved part of ability a configuration can simulate.
ABILITY_SHAPES = ("uniform", "normal")
#: Most students (``n_regular + n_experimental``) a configuration may have; a data
#: folder's students.csv may hold no more rows.
MAX_STUDENTS = 10**7
#: Bytes one simulated dataset's arrays take per student (103 measured, rounded up).
BYTES_PER_STUDENT = 128
#: Most ``n_schools * (max_small_classes + max_large_classes)``: the school draw's
#: float64 array of one class slot per school, 1 GiB at this limit.
MAX_CLASS_SCHOOL_CELLS = 2**27


def _default_race_shift() -> FrozenDict:
    return FrozenDict({"WHITE": -0.25, "ASIAN": -0.3})


@dataclass(frozen=True)
class Config(Design):
    """Every number of the class-size simulation, with the notebook's values as defaults.

    Process (notebook cells 2-9), for student ``i`` with scaled log income
    ``s_i = (log income_i - log income_min) / (log income_max - log income_min)``:

    * ``race_i ~ Categorical(race_probs)``, ``income_i ~ DiscreteUniform[income_min, income_max)``
    * ``ability_i = ability_income_weight * s_i + U_i``, ``U_i ~ Uniform(0, ability_uniform_width)``
      (``ability_shape = "normal"``: ``U_i ~ Normal(W / 2, W / sqrt(12))``, the uniform's mean
      and sd with ``W = ability_uniform_width``, a bell without the uniform's hard edges)
    * REGULAR cohort: ``P(SMALL) = clip(regular_small_intercept + regular_small_income * s_i
      + regular_small_race_shift[race_i] + regular_small_ability * U_i, 0, 1)``;
      EXPERIMENTAL cohort: ``P(SMALL) = experimental_p_small``
    * classes: ``floor(n_SMALL / small_class_size)`` SMALL and ``floor(n_LARGE / large_class_size)``
      LARGE classes, filled round-robin in student order
    * per class: ``MA ~ Bernoulli(p_ma_small or p_ma_large)``, ``school ~ Uniform{1..n_schools}``
    * per school: ``effect ~ Uniform(-school_effect_range, school_effect_range)``
    * ``score = score_intercept + score_ability_weight * ability + small_class_direct_effect * SMALL
      + teacher_ma_effect * MA + score_school_weight * school_effect + class_effect
      + Normal(0, score_noise_sd)``, with ``class_effect ~ Normal(0, class_effect_sd)`` per
      class (the teacher's effect; 0, the notebook's process, leaves it out)
    """

    race_probs: tuple[float, ...] = (0.5, 0.15, 0.2, 0.15)
    ability_income_weight: float = 10.0
    ability_uniform_width: float = 25.0
    ability_shape: str = "uniform"
    regular_small_intercept: float = 0.1
    regular_small_income: float = 0.2
    regular_small_race_shift: Mapping[str, float] = field(default_factory=_default_race_shift)
    regular_small_ability: float = 0.02
    experimental_p_small: float = 0.5
    p_ma_small: float = 0.5
    p_ma_large: float = 0.4
    school_effect_range: float = 5.0
    score_intercept: float = 45.0
    score_ability_weight: float = 1.0
    small_class_direct_effect: float = 5.0
    teacher_ma_effect: float = 10.0
    score_school_weight: float = 1.0
    score_noise_sd: float = 0.0
    class_effect_sd: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "race_probs", tuple(self.race_probs))
        if not isinstance(self.regular_small_race_shift, Mapping):
            raise ConfigError(
                "field 'regular_small_race_shift' must be a table of race code = number "
                f"(got {self.regular_small_race_shift!r})"
            )
        object.__setattr__(
            self, "regular_small_race_shift", FrozenDict(self.regular_small_race_shift)
        )
        if self.ability_shape not in ABILITY_SHAPES:
            raise ConfigError(f"field 'ability_shape' must be one of {', '.join(map(repr, ABILITY_SHAPES))}, "
                              f"got {self.ability_shape!r}")
        super().__post_init__()  # the design's rules
        object.__setattr__(self, "_design", Design(**{name: getattr(self, name) for name in DESIGN_FIELDS}))
        _validate_sizes(self)
        _validate_truth(self)

    # ------------------------------------------------------------------ derived
    @property
    def design(self) -> Design:
        """The design alone, without the parameters: what a fit needs (and what it is given)."""
        return self._design

    @property
    def race_shift_vector(self) -> tuple[float, ...]:
        """``regular_small_race_shift`` aligned with ``race_codes`` (0 for races not named)."""
        return tuple(float(self.regular_small_race_shift.get(c, 0.0)) for c in self.race_codes)

    @property
    def most_classes(self) -> int:
        """The most classes (SMALL and LARGE together) one dataset can have.

        A size with ``m > 0`` students makes ``c(m, t) = max(1, floor(m / t))`` classes
        of target size ``t`` (none when ``m = 0``).  With ``n`` students and
        ``t = min(small_class_size, large_class_size)`` the most is ``c(n, t)`` for
        ``n = 1``, else ``max(c(n, t), 1 + c(n - 1, t))``: one student alone in the
        other size adds a class; any more students there form classes of at least
        ``t`` students that the smaller size would have made as well.
        """
        n, t = self.n_students, min(self.small_class_size, self.large_class_size)

        def count(m: int) -> int:
            return max(1, math.floor(m / t))

        return count(n) if n == 1 else max(count(n), 1 + count(n - 1))

    @property
    def simulation_bytes(self) -> int:
        """About how many bytes the arrays of one simulated dataset take:
        ``BYTES_PER_STUDENT * n_students + 8 * n_schools * class slots``."""
        slots = self.max_small_classes + self.max_large_classes
        return BYTES_PER_STUDENT * self.n_students + 8 * self.n_schools * slots

    def estimands(self) -> dict[str, float]:
        """The causal estimands this configuration implies.

        * ``small_class_direct_effect``: a SMALL class with the teacher's MA held fixed.
        * ``small_class_total_effect``: a SMALL class including its path through the MA
          probability, ``direct + teacher_ma_effect * (p_ma_small - p_ma_large)``.
        * ``teacher_ma_effect``: a teacher holding a master's degree.
        """
        return {
            "small_class_direct_effect": float(self.small_class_direct_effect),
            "small_class_total_effect": float(
                self.small_class_direct_effect
                + self.teacher_ma_effect * (self.p_ma_small - self.p_ma_large)
            ),
            "teacher_ma_effect": float(self.teacher_ma_effect),
        }

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ TOML
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in FIELD_ORDER:
            v = getattr(self, name)
            if name in OPTIONAL_KEYS and v == Config.__dataclass_fields__[name].default:
                continue
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = {k: float(x) for k, x in v.items()}
            out[name] = v
        return out

    def to_toml(self) -> str:
        lines = ["# classsize configuration (defaults are the original notebook's numbers)"]
        for k, v in self.to_dict().items():
            lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "configuration") -> "Config":
        known = {name: cls.__dataclass_fields__[name] for name in FIELD_ORDER}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"{source}: {_unknown_key(key, known)}")
            kwargs[key] = _coerce(key, known[key].type, value, source)
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read configuration ({e.strerror})") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}, line {first_bad_line(raw, e)}: {not_utf8(e, raw)}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        return cls.from_dict(data, source=str(path))


#: Every key of a configuration, in the order its files (TOML, ``truth.json``) list them.
FIELD_ORDER = ("n_regular", "n_experimental", "race_codes", "race_probs", "income_min", "income_max",
               "ability_income_weight", "ability_uniform_width", "ability_shape", "regular_small_intercept",
               "regular_small_income", "regular_small_race_shift", "regular_small_ability", "experimental_p_small",
               "small_class_size", "large_class_size", "p_ma_small", "p_ma_large", "n_schools", "school_effect_range",
               "score_intercept", "score_ability_weight", "small_class_direct_effect", "teacher_ma_effect", "score_school_weight",
               "score_noise_sd", "class_effect_sd")
#: Keys a configuration writes only when they differ from their defaults, the notebook's
#: process (so its files keep the notebook's keys).
OPTIONAL_KEYS = ("ability_shape", "class_effect_sd")
assert set(FIELD_ORDER) == set(Config.__dataclass_fields__)


# ---------------------------------------------------------------------- helpers
#: Byte-order marks of encodings a text file is often saved in instead of UTF-8.
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
               (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def not_utf8(e: UnicodeDecodeError, head: bytes) -> str:
    """Why a file is not UTF-8 text, in one line: the encoding its byte-order mark
    names (``head``: its first bytes), or the first bad byte (the caller names where)."""
    for bom, name in _OTHER_BOMS:
        if head.startswith(bom):
            return f"not UTF-8 text (it starts with the byte-order mark of {name}); save it as UTF-8"
    bad = e.object[e.start]
    return (f"not UTF-8 text (byte 0x{bad:02x}: {e.reason}; latin-1 or another 8-bit encoding?); "
            "save it as UTF-8")


def first_bad_line(raw: bytes, e: UnicodeDecodeError) -> int:
    """The line (from 1) of the first byte of ``raw`` that is not UTF-8."""
    return raw.count(b"\n", 0, e.start) + 1


def _unknown_key(key: str, known: Mapping[str, Any]) -> str:
    """The message for an unknown key: the nearest known key, or all of them."""
    nearest = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if nearest:
        return f"unknown key '{key}' (did you mean '{nearest[0]}'?)"
    return f"unknown key '{key}' (known keys: {', '.join(known)})"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _coerce(key: str, annotation: Any, value: Any, source: str) -> Any:
    ann = str(annotation)
    if key in INT_FIELDS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{source}: field '{key}' must be an integer, got {value!r}")
        return value
    if key == "ability_shape":
        if not isinstance(value, str):
            raise ConfigError(f"{source}: field '{key}' must be a string, got {value!r}")
        return value
    if key == "race_codes":
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{source}: field '{key}' must be a list of strings, got {value!r}")
        return tuple(value)
    if key == "race_probs":
        if not isinstance(value, list) or not all(is_number(x) for x in value):
            raise ConfigError(f"{source}: field '{key}' must be a list of numbers, got {value!r}")
        return tuple(float(x) for x in value)
    if key == "regular_small_race_shift":
        if not isinstance(value, dict) or not all(is_number(x) for x in value.values()):
            raise ConfigError(
                f"{source}: field '{key}' must be a table of race code = number, got {value!r}"
            )
        return {str(k): float(x) for k, x in value.items()}
    if "float" in ann:
        if not is_number(value):
            raise ConfigError(f"{source}: field '{key}' must be a number, got {value!r}")
        return float(value)
    return value


def _validate_sizes(c: Config) -> None:
    """The size limits of the module docstring (the design's own rules already passed)."""
    check(c.n_students <= MAX_STUDENTS, "n_regular",
          f"plus n_experimental must be at most {MAX_STUDENTS} students (MAX_STUDENTS: one simulated "
          f"dataset keeps about {BYTES_PER_STUDENT} bytes per student)", c.n_students)
    most = c.most_classes
    notebook = Design.__dataclass_fields__["n_schools"].default
    check(c.n_schools <= max(most, notebook), "n_schools",
          f"must be at most the {most} classes a dataset of this configuration can have "
          f"(or the notebook's {notebook}, whichever is larger): schools beyond them stay empty",
          c.n_schools)
    slots = c.max_small_classes + c.max_large_classes
    check(c.n_schools * slots <= MAX_CLASS_SCHOOL_CELLS, "n_schools",
          f"times the {slots} class slots must be at most {MAX_CLASS_SCHOOL_CELLS} (MAX_CLASS_SCHOOL_CELLS: "
          f"drawing each class's school takes 8 bytes per class slot and school, at most 1 GiB)",
          c.n_schools)


def _validate_truth(c: Config) -> None:
    """The rules of the parameters (the design's are :class:`~classsize.model.design.Design`'s)."""
    for f in fields(c):
        v = getattr(c, f.name)
        if f.name not in DESIGN_FIELDS and isinstance(v, (int, float)):
            finite(f.name, v)
    check(len(c.race_probs) == len(c.race_codes), "race_probs", "must have one probability per race code", c.race_probs)
    for p in c.race_probs:
        finite("race_probs", p)
        check(0.0 <= p <= 1.0, "race_probs", "must be probabilities in [0, 1]", c.race_probs)
    check(abs(sum(c.race_probs) - 1.0) < 1e-9, "race_probs", "must sum to 1", c.race_probs)
    for code, shift in c.regular_small_race_shift.items():
        check(code in c.race_codes, "regular_small_race_shift", "names a race code not in race_codes", code)
        finite("regular_small_race_shift", shift)
    check(c.ability_uniform_width > 0, "ability_uniform_width", "must be > 0", c.ability_uniform_width)
    for name in ("experimental_p_small", "p_ma_small", "p_ma_large"):
        v = getattr(c, name)
        check(0.0 <= v <= 1.0, name, "must be a probability in [0, 1]", v)
    check(c.school_effect_range >= 0, "school_effect_range", "must be >= 0", c.school_effect_range)
    check(c.score_noise_sd >= 0, "score_noise_sd", "must be >= 0", c.score_noise_sd)
    check(c.class_effect_sd >= 0, "class_effect_sd", "must be >= 0", c.class_effect_sd)
