"""The one registry of evaluation attacks, read at call time, and attack spec strings.

An attack is `attack(logits_fn, x, y, key, *, eps, **options) -> x_adv`. It is one entry:

    @register_attack("pgd50x2")
    def pgd50x2(logits_fn, x, y, key, *, eps=8 / 255): ...

after which the CLI (`evaluate --attacks=...`), `eval.robust_attack`, the grids' evaluation and the
sanity checks find it by name (they look it up when they run, never from a copy made at import).

A spec string names a registered attack and sets its keyword options:

    pgd:steps=50,restarts=2,loss=cw        apgd_ce:n_iter=50        cw_inf_30

Each option must be a keyword-only parameter of the attack (other than `eps`), its value is read
with the type of the parameter's default (a float may be written as a fraction, `step_size=2/255`),
and an attack may register a `check(**options)` that rejects bad values; every error names what is
accepted. The same spec always resolves to the same function object, so compiled evaluation
programs (which take the attack as a static argument) are reused.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from fractions import Fraction
from typing import Callable


class AttackSpecError(ValueError):
    """An attack name or spec string that cannot be used; the message says what is accepted."""


@dataclasses.dataclass(frozen=True)
class AttackEntry:
    name: str
    attack: Callable
    check: Callable[..., None] | None = None   # check(**options) raises ValueError on a bad value


ATTACKS: dict[str, Callable] = {}             # name -> attack (the live registry: attacks.NAMED is this dict)
_ENTRIES: dict[str, AttackEntry] = {}


def register_attack(name: str, attack: Callable | None = None, *, check: Callable[..., None] | None = None,
                    replace: bool = False):
    """Registers `attack` under `name` (usable as a decorator: `@register_attack("name")`)."""
    if not name or any(c in name for c in ":,= "):
        raise ValueError(f"Attack name {name!r} must be non-empty without ':', ',', '=' or spaces.")

    def deco(fn):
        if name in ATTACKS and not replace:
            raise ValueError(f"Attack {name!r} is already registered.")
        ATTACKS[name] = fn
        _ENTRIES[name] = AttackEntry(name, fn, check)
        _resolve.cache_clear()
        return fn
    return deco(attack) if attack is not None else deco


def unregister_attack(name: str) -> None:
    ATTACKS.pop(name, None)
    _ENTRIES.pop(name, None)
    _resolve.cache_clear()


def names() -> tuple[str, ...]:
    """The registered attack names, sorted."""
    return tuple(sorted(ATTACKS))


def options(name: str) -> dict:
    """{option: default} of a registered attack: its keyword-only parameters other than eps."""
    params = inspect.signature(ATTACKS[name]).parameters.values()
    return {p.name: p.default for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "eps" and p.default is not p.empty}


def _value(text: str, default, what: str):
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(Fraction(text))
        return text
    except (ValueError, ZeroDivisionError):
        kind = type(default).__name__
        raise AttackSpecError(f"{what}={text!r} is not a valid {kind}.") from None


def parse_spec(spec: str) -> tuple[str, dict]:
    """'pgd:steps=50,restarts=2' -> ('pgd', {'steps': 50, 'restarts': 2}), checked against the
    registered attack's options."""
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()
    if name not in ATTACKS:
        raise AttackSpecError(f"Unknown attack {name!r} (in {spec!r}). Registered: {', '.join(names())}; "
                              "a spec sets options: 'name:option=value,...'.")
    valid = options(name)
    opts = {}
    for item in (rest.split(",") if sep else ()):
        key, eq, text = (s.strip() for s in item.partition("="))
        if not eq or not key or not text:
            raise AttackSpecError(f"Attack spec {spec!r}: {item!r} is not 'option=value'.")
        if key not in valid:
            raise AttackSpecError(f"Attack {name!r} has no option {key!r}. Valid options: "
                                  f"{', '.join(f'{k} (default {v!r})' for k, v in valid.items()) or '(none)'}.")
        if key in opts:
            raise AttackSpecError(f"Attack spec {spec!r} sets {key!r} twice.")
        opts[key] = _value(text, valid[key], f"{name}.{key}")
    check = _ENTRIES[name].check
    if check is not None:
        try:
            check(**{**valid, **opts})
        except ValueError as e:
            raise AttackSpecError(f"Attack spec {spec!r}: {e}") from None
    return name, opts


@functools.lru_cache(maxsize=None)
def _resolve(name: str, items: tuple) -> Callable:
    fn = ATTACKS[name]
    return functools.partial(fn, **dict(items)) if items else fn


def resolve(spec: str) -> Callable:
    """The attack a name or spec string denotes (`attack(logits_fn, x, y, key, *, eps) -> x_adv`);
    the same spec gives the same object."""
    name, opts = parse_spec(spec)
    return _resolve(name, tuple(sorted(opts.items())))


def split_list(text: str) -> tuple[str, ...]:
    """Splits a comma-separated attack list in which specs carry their own commas:
    'clean,pgd:steps=50,restarts=2,fgsm' -> ('clean', 'pgd:steps=50,restarts=2', 'fgsm').
    An item 'option=value' (no ':') continues the spec before it."""
    items: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part and ":" not in part and items and ":" in items[-1]:
            items[-1] += "," + part
        else:
            items.append(part)
    return tuple(items)
