"""What a configuration report says about whose runs, declared in the study YAML (``report:``), not in code.

A study names, as data: each run's **role** (``proposed``, ``ablation: ...``, ``baseline``; the first
rule whose factors match wins), the **knobs** whose paired effects the report computes (a factor, the
runs it is read among, which values it compares), and the **proposed** configuration that every
baseline is compared with, one of those comparisons being the **claim** a paper makes. A study that
declares none of this gets the configuration table, the plots and every run, and no role column.
The DDSNet studies share one declaration: configs/report/ddsnet.yaml (``report:`` may name a
file, relative to the working directory as ``base_config`` is, or hold the mapping itself).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lightclf.errors import ConfigError
from lightclf.factors import Factors, canonical, check_factor_names

__all__ = ["Role", "Knob", "Claim", "Versus", "ReportPlan", "load_plan"]

_FACTOR_FIELDS = {f.name for f in fields(Factors) if f.name != "settings"}  # what a cost sentence may name


def _mapping(section: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"study report: {section} must be a mapping, got {value!r}")
    return dict(value)


def _known(section: str, raw: dict[str, Any], keys: set[str]) -> None:
    unknown = set(raw) - keys
    if unknown:
        raise ConfigError(f"study report: {section} has unknown keys {sorted(unknown)} (known: {sorted(keys)})")


@dataclass(frozen=True)
class Role:
    """A run matching ``where`` has this role (``proposed``, ``baseline``, ``ablation: <what>``, any word)."""

    name: str
    where: dict[str, Any]


@dataclass(frozen=True)
class Knob:
    """A factor whose paired effect (``b`` minus ``a``) the report computes among the runs matching
    ``where``: the given ``a`` and ``b``, else the highest value against the lowest (``pairs:
    extremes``) or each higher value against each lower one (``pairs: all``). ``compared`` says what
    was held equal (``{a}``/``{b}`` filled in); ``table`` names the factors a per-value table holds
    fixed (none: no table) and ``among`` says whose runs it shows; ``receptive_field`` adds the
    theoretical field per value to that table; ``cost`` (with ``a`` and ``b``) is a sentence on the
    parameters and MACs of ``a`` against ``b`` (``{params}``, ``{macs}`` and ``a``'s factors filled in)."""

    factor: str
    name: str = ""
    where: dict[str, Any] = field(default_factory=dict)
    a: Any = None
    b: Any = None
    pairs: str = "extremes"
    compared: str = "{b} vs {a}"
    table: tuple[str, ...] = ()
    among: str = ""
    receptive_field: bool = False
    cost: str = ""

    @property
    def title(self) -> str:
        return self.name or canonical(self.factor).replace("_", " ")


@dataclass(frozen=True)
class Claim:
    """A comparison a paper makes: the proposed configuration against the baseline matching
    ``baseline`` (at its largest input when several), with its title and what the paper says."""

    baseline: dict[str, Any]
    title: str
    baseline_name: str = ""
    note: str = ""  # how the baseline was counted, in parentheses after the costs
    says: str = ""  # what the paper claims, after the figures


@dataclass(frozen=True)
class Versus:
    """The proposed configuration compared (unpaired, Welch) with every baseline on the baseline's
    budget: among the runs with role ``proposed`` that match ``where``, the configuration with the
    best mean; ``name``/``label`` are how sentences call it ("DDSNet", "DDSNet α=1.0")."""

    where: dict[str, Any]
    name: str
    label: str
    claim: Claim | None = None


@dataclass(frozen=True)
class ReportPlan:
    """A study's declared roles, knobs and baseline comparisons (all empty: none declared)."""

    roles: tuple[Role, ...] = ()
    knobs: tuple[Knob, ...] = ()
    versus: Versus | None = None

    def role(self, factors: Factors) -> str:
        """The first declared role whose factors match (``other`` when none does; ``""`` when the study declares no roles)."""
        if not self.roles:
            return ""
        return next((r.name for r in self.roles if factors.matches(r.where)), "other")

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> ReportPlan:
        """From a study's ``report:`` mapping; one-line errors for anything malformed."""
        raw = _mapping("report", raw)
        _known("report", raw, {"roles", "knobs", "versus"})
        roles = []
        for entry in raw.get("roles") or []:
            if not isinstance(entry, dict) or not entry.get("role"):
                raise ConfigError(f"study report: each role needs a role name (and where, its factors), got {entry!r}")
            _known("a role", entry, {"role", "where"})
            roles.append(Role(str(entry["role"]), _checked("role " + str(entry["role"]), entry.get("where"))))
        knobs = [_knob(entry) for entry in raw.get("knobs") or []]
        versus = None
        if raw.get("versus") is not None:
            v = _mapping("versus", raw["versus"])
            _known("versus", v, {"where", "name", "label", "claim"})
            claim = None
            if v.get("claim") is not None:
                c = _mapping("versus claim", v["claim"])
                _known("versus claim", c, set(Claim.__dataclass_fields__))
                if not c.get("baseline") or not c.get("title"):
                    raise ConfigError("study report: versus claim needs baseline (factors) and title")
                claim = Claim(**{**c, "baseline": _checked("claim baseline", c["baseline"])})
            name = str(v.get("name") or "proposed")
            versus = Versus(_checked("versus", v.get("where")), name, str(v.get("label") or name), claim)
        if versus is not None and not any(r.name == "proposed" for r in roles):
            raise ConfigError("study report: versus compares the runs with role 'proposed', but no role is named so")
        return cls(tuple(roles), tuple(knobs), versus)


def _knob(entry: Any) -> Knob:
    """One declared knob, every field checked (one-line errors), its sentences' fields included."""
    if not isinstance(entry, dict) or not isinstance(entry.get("factor"), str) or not entry["factor"]:
        raise ConfigError(f"study report: each knob needs a factor (a name or config key), got {entry!r}")
    factor = entry["factor"]
    _known(f"knob {factor!r}", entry, set(Knob.__dataclass_fields__))
    check_factor_names("study report", f"knob {factor}", "factor", {factor: None})
    if entry.get("pairs", "extremes") not in ("extremes", "all"):
        raise ConfigError(f"study report: knob {factor!r} pairs must be extremes or all")
    given = [entry.get(k) is not None for k in ("a", "b")]
    if any(given) and not all(given):
        raise ConfigError(f"study report: knob {factor!r} needs both a and b (not null), or neither")
    if all(given) and "pairs" in entry:
        raise ConfigError(f"study report: knob {factor!r} names a and b, so pairs has nothing to choose")
    if entry.get("cost") and not all(given):
        raise ConfigError(f"study report: knob {factor!r} cost compares a with b: name both")
    table = entry.get("table") or []
    if not isinstance(table, list) or not all(isinstance(t, str) for t in table):
        raise ConfigError(f"study report: knob {factor!r} table must be a list of factor names, got {table!r}")
    check_factor_names("study report", f"knob {factor}", "table", dict.fromkeys(table))
    if not isinstance(entry.get("receptive_field", False), bool):
        raise ConfigError(f"study report: knob {factor!r} receptive_field must be true or false")
    for key, allowed in (("compared", {"a", "b"}), ("cost", {"params", "macs", *_FACTOR_FIELDS})):
        _check_format(f"knob {factor!r} {key}", entry.get(key, ""), allowed)
    return Knob(**{**entry, "where": _checked(f"knob {factor}", entry.get("where")), "table": tuple(table)})


def _check_format(section: str, text: Any, allowed: set[str]) -> None:
    """A sentence template names only fields the report fills in (else a KeyError at report time)."""
    if not isinstance(text, str):
        raise ConfigError(f"study report: {section} must be a string, got {text!r}")
    try:
        names = {
            name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name is not None
        }
    except ValueError as err:
        raise ConfigError(f"study report: {section} is not a valid template: {err}") from None
    if names - allowed:
        raise ConfigError(f"study report: {section} names {sorted(names - allowed)}; it may name {sorted(allowed)}")


def _checked(section: str, where: Any) -> dict[str, Any]:
    where = _mapping(section, where)
    check_factor_names("study report", section, "where", where)
    return where


def load_plan(value: str | dict[str, Any] | None) -> ReportPlan:
    """A study's ``report:`` value: a mapping, or the path of a YAML file holding one (None: nothing declared)."""
    if isinstance(value, str):
        path = Path(value)
        try:
            value = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"study report: {path} not found") from None
        except OSError as err:
            raise ConfigError(f"study report: {path} cannot be read ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"study report: {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return ReportPlan.parse(value)
