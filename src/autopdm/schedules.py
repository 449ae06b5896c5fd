"""Maintenance schedules: which services each car is due for, and when it last had them.

The schedules are data (`data/schedules.yaml`, or the workshop's own file named by
AUTOPDM_SCHEDULES; the layout is described at the top of the shipped file): a `default` schedule,
overrides by make or make and model, and for each service the service records (`service_events`
component/action) that mark it done. A bad file is refused as a whole with one message naming the
file and the key, so a typo never silently drops a service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from autopdm.components import service_components
from autopdm.config import Settings
from autopdm.schemas import SERVICE_ACTIONS as ACTIONS
RULE_KEYS = ("every_km", "every_months", "from_age_years")


class ScheduleError(ValueError):
    """A schedules file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Rule:
    service: str
    text: str
    done_by: tuple[tuple[str, str], ...]   # (component, action) of the records that count
    every_km: float | None = None
    every_months: int | None = None
    from_age_years: float | None = None


@dataclass(frozen=True)
class Schedules:
    source: str
    default: dict[str, Rule]
    overrides: dict[str, dict[str, Rule | None]]   # lower-case "make" or "make model" → service → rule (None: not due)

    def for_vehicle(self, make, model) -> list[Rule]:
        """The rules for one car: default, then its make's, then its make and model's."""
        out: dict[str, Rule | None] = dict(self.default)
        mk = str(make).strip().lower() if isinstance(make, str) else ""
        md = str(model).strip().lower() if isinstance(model, str) else ""
        for key in (mk, f"{mk} {md}".strip()):
            if key and key in self.overrides:
                out.update(self.overrides[key])
        return [r for r in out.values() if r is not None]


def default_path() -> Path:
    return Path(str(resources.files("autopdm") / "data" / "schedules.yaml"))


def load(path: str | Path | None = None) -> Schedules:
    """The schedules from `path`, else AUTOPDM_SCHEDULES, else the shipped file."""
    if path is None:
        path = Settings().schedules or default_path()
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScheduleError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScheduleError(f"{path}: not a YAML file ({str(exc).splitlines()[0]})") from None
    return parse(spec, str(path))


def parse(spec, source: str = "<schedules>") -> Schedules:
    def bad(key: str, why: str) -> ScheduleError:
        return ScheduleError(f"{source}: {key}: {why}")

    if not isinstance(spec, dict):
        raise bad("(top)", "expected a mapping with `services` and `schedules`")
    unknown = set(spec) - {"services", "schedules"}
    if unknown:
        raise bad(sorted(unknown)[0], "unknown key (expected `services` and `schedules`)")
    services = spec.get("services")
    if not isinstance(services, dict) or not services:
        raise bad("services", "expected a mapping of service name → {text, done_by}")
    meta: dict[str, tuple[str, tuple]] = {}
    for name, s in services.items():
        key = f"services.{name}"
        if not isinstance(s, dict):
            raise bad(key, "expected a mapping with `text` and `done_by`")
        extra = set(s) - {"text", "done_by"}
        if extra:
            raise bad(f"{key}.{sorted(extra)[0]}", "unknown key (expected `text`, `done_by`)")
        text = s.get("text", str(name).replace("_", " "))
        if not isinstance(text, str) or not text.strip():
            raise bad(f"{key}.text", "expected text")
        done = s.get("done_by")
        if not isinstance(done, list) or not done:
            raise bad(f"{key}.done_by", "expected a list of component/action, e.g. [brake/inspect]")
        kinds = []
        for i, k in enumerate(done):
            comp, _, act = str(k).partition("/")
            comps = service_components()
            if comp not in comps or act not in ACTIONS:
                raise bad(f"{key}.done_by[{i}]", f"{k!r} is not component/action with component one of "
                                                 f"{', '.join(comps)} and action one of {', '.join(ACTIONS)}")
            kinds.append((comp, act))
        meta[str(name)] = (text.strip(), tuple(kinds))
    scheds = spec.get("schedules")
    if not isinstance(scheds, dict) or "default" not in scheds:
        raise bad("schedules", "expected a mapping with a `default` schedule")
    parsed: dict[str, dict[str, Rule | None]] = {}
    for sname, sched in scheds.items():
        skey = f"schedules.{sname}"
        if not isinstance(sched, dict):
            raise bad(skey, "expected a mapping of service name → intervals")
        rules: dict[str, Rule | None] = {}
        for svc, r in sched.items():
            key = f"{skey}.{svc}"
            if svc not in meta:
                raise bad(key, f"unknown service (not under `services`: {', '.join(meta)})")
            if r is None and sname != "default":
                rules[svc] = None
                continue
            if not isinstance(r, dict):
                raise bad(key, "expected {every_km, every_months, from_age_years}")
            extra = set(r) - set(RULE_KEYS)
            if extra:
                raise bad(f"{key}.{sorted(extra)[0]}", f"unknown key (expected {', '.join(RULE_KEYS)})")
            vals = {}
            for k in RULE_KEYS:
                v = r.get(k)
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (k == "every_months" and v != int(v)):
                    raise bad(f"{key}.{k}", f"expected a positive {'whole ' if k == 'every_months' else ''}number, got {v!r}")
                vals[k] = int(v) if k == "every_months" else float(v)
            if "every_km" not in vals and "every_months" not in vals:
                raise bad(key, "needs every_km or every_months (or both)")
            rules[svc] = Rule(svc, meta[svc][0], meta[svc][1], **vals)
        parsed[str(sname).strip().lower()] = rules
    default = {k: v for k, v in parsed.pop("default").items() if v is not None}
    return Schedules(source, default, parsed)


def add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    y, m = d.year + y, m + 1
    last = (date(y + (m == 12), m % 12 + 1, 1) - date(y, m, 1)).days
    return date(y, m, min(d.day, last))


def event_lists(service_events: pd.DataFrame | None) -> dict[str, list[tuple]]:
    """vehicle → its service records as (date, component, action, odometer km or None), oldest first."""
    if service_events is None or service_events.empty:
        return {}
    ev = service_events
    d = pd.to_datetime(ev["date"]).dt.date
    odo = pd.to_numeric(ev["odometer_km"], errors="coerce")
    out: dict[str, list[tuple]] = {}
    for row in sorted(zip(ev["vehicle_id"].astype(str), d, ev["component"], ev["action"], odo),
                      key=lambda r: (r[0], r[1])):
        out.setdefault(row[0], []).append((row[1], row[2], row[3], None if pd.isna(row[4]) else float(row[4])))
    return out


def last_done(events: list[tuple] | None, rule: Rule, as_of: date) -> tuple[date, float | None] | None:
    """(date, odometer km or None) of the latest record on or before `as_of` that counts as `rule`'s
    service done. `events`: one vehicle's records as `event_lists` gives them (oldest first)."""
    kinds = set(rule.done_by)
    best_d, best_km = None, None
    for d, comp, act, km in events or ():
        if d > as_of:
            break
        if (comp, act) not in kinds:
            continue
        if best_d is None or d > best_d:
            best_d, best_km = d, km
        elif km is not None and (best_km is None or km > best_km):   # several records that day
            best_km = km
    return None if best_d is None else (best_d, best_km)
