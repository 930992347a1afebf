"""A run's factors as one typed, torch-free record with one label format.

Built from what a study wrote for the run (``study.json``: network, the network kwargs the study
set, resolution and overrides), so two runs are the same configuration exactly when their
``Factors`` are equal up to the seed. Everything a study can vary is here: the network and its
kwargs (width, dilation rate and schedule, separability, small-input stem, any other), the
resolution, the training budget (images x epochs) and any other recipe override (e.g. the peak LR).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lightclf.errors import ConfigError

__all__ = [
    "Factors",
    "Question",
    "Reference",
    "Choice",
    "PROPOSED_FAMILY",
    "MOVES_WITH",
    "ALIASES",
    "canonical",
    "fold_settings",
    "check_factor_names",
]

PROPOSED_FAMILY = ("ddsnet", "ddsnet_nodilation", "ddsnet_plainconv", "ddsnet_plainconv_nodilation")
_KWARGS = ("width_multiplier", "dilation", "dilation_schedule", "small_input")
_BUDGET_KEYS = ("data.init_args.train_subset", "trainer.max_epochs")


# The DDSNet knobs' short names, kept as aliases of the config keys they set: a study, a question or a
# choice may name either (``width_multiplier`` or ``model.network_kwargs.width_multiplier``).
ALIASES: dict[str, str] = {
    "network": "model.network",
    "resolution": "data.init_args.resolution",
    **{k: f"model.network_kwargs.{k}" for k in _KWARGS},
}
_BY_KEY = {key: short for short, key in ALIASES.items()}
NETWORK_KWARG = "model.network_kwargs."


def canonical(name: str) -> str:
    """A factor's name as Factors knows it: a short name stays; a config key with a short alias becomes
    the alias; any other config key stays as it is (a generic factor)."""
    return _BY_KEY.get(name, name)


def split_setting(key: str) -> tuple[str, str]:
    """Where a study factor named by a config key goes in a fit: ``("network_kwargs", name)`` for
    ``model.network_kwargs.<name>``, ``("resolution", "")``, or ``("overrides", key)``."""
    key = ALIASES.get(key, key)
    if key.startswith(NETWORK_KWARG):
        return "network_kwargs", key[len(NETWORK_KWARG) :]
    if key == ALIASES["resolution"]:
        return "resolution", ""
    return "overrides", key


# Factors one cannot change alone within the DDSNet family: a schedule sets the rate (none = 1),
# the network (plain-conv or separable) its separability. A comparison of one leaves these free.
MOVES_WITH: dict[str, tuple[str, ...]] = {
    "dilation_schedule": ("dilation",),
    "dilation": ("dilation_schedule",),
    "network": ("separable",),
    "separable": ("network",),
}


@dataclass(frozen=True)
class Factors:
    """A run's factors, typed: the network and its knobs, the resolution, the budget, other settings and the seed."""

    network: str
    width_multiplier: float | None = None
    resolution: int | None = None
    dilation: int | None = None
    dilation_schedule: str | None = None  # none, late, early, all (as resolved for the DDSNet family)
    separable: bool | None = None
    small_input: bool | None = None
    budget: str = "full"  # "20k img x 2 ep", or "full" (the base config's)
    other: str = ""  # other network kwargs and recipe overrides, as a sorted JSON object ("" when none)
    seed: int | None = None
    # Every setting the study made for the run, by config key (budget keys included): what a generic
    # factor (any config key) is read from. Derived from the fields' inputs, so never compared or shown.
    settings: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_study(cls, factors: dict[str, Any]) -> Factors:
        """From a run's ``study.json`` factors (the study's spec for it); factors named by config keys
        (``model.network_kwargs.drop_rate``, ``model.optimizer.init_args.lr``) are folded in first."""
        factors = fold_settings(factors)
        kwargs = dict(factors.get("network_kwargs") or {})
        for key in _KWARGS:
            if factors.get(key) is not None:
                kwargs.setdefault(key, factors[key])
        network = factors["network"]
        overrides = dict(factors.get("overrides") or {})
        settings = {ALIASES["network"]: network, **{NETWORK_KWARG + k: v for k, v in kwargs.items()}, **overrides}
        if factors.get("resolution") is not None:
            settings[ALIASES["resolution"]] = factors["resolution"]
        images, epochs = (overrides.pop(key, None) for key in _BUDGET_KEYS)
        budget = ([f"{images / 1000:g}k img"] if images else []) + ([f"{epochs} ep"] if epochs else [])
        proposed = network in PROPOSED_FAMILY
        dilation = kwargs.pop("dilation", None)
        if proposed:
            dilation = dilation if dilation is not None else (1 if "nodilation" in network else 2)
        schedule = kwargs.pop("dilation_schedule", None)
        if schedule is not None and not isinstance(schedule, str):  # one rate per block: a hashable label
            schedule = "/".join(str(int(d)) for d in schedule)
        if proposed:
            schedule = "none" if dilation == 1 else (schedule or "late")
        # The DDSNet family's width and stem have fields of their own; any other network keeps them in
        # ``other`` (a timm net's own width knob must not merge two configurations).
        own = ("width_multiplier", "small_input") if proposed else ()
        other = {**{k: v for k, v in kwargs.items() if k not in own}, **overrides}
        return cls(
            network=network,
            width_multiplier=kwargs.get("width_multiplier") if proposed else None,
            resolution=factors.get("resolution"),
            dilation=dilation,
            dilation_schedule=schedule,
            separable=("plainconv" not in network) if proposed else None,
            small_input=kwargs.get("small_input") if proposed else None,
            budget=" x ".join(budget) if budget else "full",
            other=json.dumps(other, sort_keys=True) if other else "",
            seed=factors.get("seed"),
            settings=settings,
        )

    @property
    def proposed(self) -> bool:
        return self.network in PROPOSED_FAMILY

    @property
    def configuration(self) -> Factors:
        """The same factors without the seed: what seeds of one configuration share."""
        return replace(self, seed=None)

    def value(self, name: str) -> Any:
        """A factor by its short name or by any config key the study set (None when it set none)."""
        name = canonical(name)
        if name in _FIELDS:
            return getattr(self, name)
        return self.settings.get(name)

    @property
    def label(self) -> str:
        """One label format everywhere: ``ddsnet w0.25 28px d2 early`` (+ budget and other settings)."""
        parts = [self.network]
        if self.width_multiplier is not None:
            parts.append(f"w{self.width_multiplier:g}")
        if self.resolution is not None:
            parts.append(f"{self.resolution}px")
        if self.proposed:
            parts.append("d1" if self.dilation == 1 else f"d{self.dilation} {self.dilation_schedule}")
        if self.budget != "full":
            parts.append(f"({self.budget})")
        if self.other:
            parts.append(", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in json.loads(self.other).items()))
        return " ".join(parts)

    @property
    def model_spec(self) -> str:
        """The network as a benchmark spec (``lightclf bench --models``), e.g.
        ``ddsnet:width_multiplier=0.25,dilation=2,small_input=true`` (the default schedule unnamed)."""
        kwargs = [("width_multiplier", self.width_multiplier), ("dilation", self.dilation)]
        if self.dilation_schedule not in (None, "late", "none"):
            kwargs.append(("dilation_schedule", self.dilation_schedule))
        kwargs.append(("small_input", self.small_input))
        body = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in kwargs if v is not None)
        return f"{self.network}:{body}" if body else self.network

    def as_dict(self) -> dict[str, Any]:
        """The typed factors (the settings they come from left out)."""
        return {k: v for k, v in asdict(self).items() if k != "settings"}

    def matches(self, wanted: dict[str, Any]) -> bool:
        """True when every named factor (short name or config key) has the wanted value."""
        return all(self.value(k) == v for k, v in wanted.items())

    def differs_only_in(self, other: Factors, *names: str) -> bool:
        """True when the two agree on every factor but ``names`` (the seed included, unless named). A
        name that is a config key (a generic factor) is left out of the settings compared, and the
        ``other`` label that carries it is compared through the settings instead."""
        names = {canonical(n) for n in names}
        if names & set(_BUDGET_KEYS):  # the budget label is made of these keys: it moves with them
            names.add("budget")
        generic = {n for n in names if n not in _FIELDS}
        mine, theirs = self.as_dict(), other.as_dict()
        if not generic:
            return all(mine[k] == theirs[k] for k in mine if k not in names)
        if not all(mine[k] == theirs[k] for k in mine if k not in names and k != "other"):
            return False
        keys = (set(self.settings) | set(other.settings)) - generic - set(ALIASES.values())
        return all(self.settings.get(k) == other.settings.get(k) for k in keys)


@dataclass(frozen=True)
class Reference:
    """An effect someone else reported for a question (``b - a`` on top-1, a fraction: 0.01 is one
    point) and who reported it; the report says where it falls against the question's 95% interval."""

    effect: float
    source: str

    @classmethod
    def parse(cls, question: str, raw: Any) -> Reference:
        effect = raw.get("effect") if isinstance(raw, dict) else None
        # A fraction of top-1 lies in (-1, 1): 1 or more is a slip (points for a fraction, 1 = 100 points).
        number = isinstance(effect, int | float) and not isinstance(effect, bool)
        if not number or not math.isfinite(effect) or abs(effect) >= 1 or not raw.get("source"):
            raise ConfigError(
                f"study questions: {question!r} reference needs effect (a fraction of top-1 in (-1, 1), 0.01 ="
                f" one point) and source, got {raw!r}"
            )
        return cls(float(effect), str(raw["source"]))


@dataclass(frozen=True)
class Question:
    """A question a study asks: arm ``b`` minus arm ``a`` on test top-1, among the runs matching ``where``,
    optionally with an effect reported elsewhere (``reference``) to hold against the answer."""

    name: str
    a: dict[str, Any]
    b: dict[str, Any]
    where: dict[str, Any] = field(default_factory=dict)
    reference: Reference | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Question:
        for part in ("a", "b", "where"):
            check_factor_names("study questions", raw.get("name"), part, raw.get(part))
        if not raw.get("name") or not raw.get("a") or not raw.get("b"):
            raise ConfigError(f"study questions: each needs name, a and b, got {raw}")
        reference = Reference.parse(raw["name"], raw["reference"]) if raw.get("reference") is not None else None
        return cls(raw["name"], dict(raw["a"]), dict(raw["b"]), dict(raw.get("where") or {}), reference)


@dataclass(frozen=True)
class Choice:
    """A setting picked on validation top-1, never on test: the option (runs matching its factors,
    among those matching ``where``) with the highest mean validation top-1 over the seeds every option
    has, e.g. a baseline's peak LR. Ties go to the option listed first (list the recipe's own first)."""

    name: str
    options: dict[str, dict[str, Any]]  # label -> the factors its runs match
    where: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Choice:
        options = raw.get("options")
        if not raw.get("name") or not isinstance(options, dict) or len(options) < 2:
            raise ConfigError(f"study choices: each needs a name and two or more options, got {raw}")
        check_factor_names("study choices", raw["name"], "where", raw.get("where"))
        for label, wanted in options.items():
            if not isinstance(wanted, dict) or not wanted:
                raise ConfigError(
                    f"study choices: {raw['name']!r} option {label!r} must name the factors its runs have"
                )
            check_factor_names("study choices", raw["name"], f"option {label!r}", wanted)
        return cls(raw["name"], {str(k): dict(v) for k, v in options.items()}, dict(raw.get("where") or {}))


def fold_settings(factors: dict[str, Any]) -> dict[str, Any]:
    """A study spec's factors with those named by config keys moved where a fit takes them: network
    kwargs into ``network_kwargs``, the resolution into ``resolution``, the rest into ``overrides``."""
    folded = {k: v for k, v in factors.items() if "." not in k}
    for key, value in factors.items():
        if "." not in key:
            continue
        where, name = split_setting(key)
        if where == "resolution":
            folded["resolution"] = value
        else:
            folded[where] = {**(folded.get(where) or {}), (name or key): value}
    return folded


def check_factor_names(section: str, name: Any, part: str, wanted: dict[str, Any] | None) -> None:
    """A one-line error unless ``wanted`` maps known factors (short names or config keys) to values."""
    if wanted is not None and not isinstance(wanted, dict):
        raise ConfigError(f"{section}: {name!r} {part} must be a mapping of factors to values, got {wanted!r}")
    bad = {k for k in wanted or {} if k not in _FIELDS and "." not in k}
    if bad:
        raise ConfigError(
            f"{section}: {name!r} {part} names unknown factors {sorted(bad)} (a factor is one of {sorted(_FIELDS)} "
            "or a fit config key like model.network_kwargs.drop_rate)"
        )


_FIELDS = frozenset(f for f in Factors.__dataclass_fields__ if f != "settings")
