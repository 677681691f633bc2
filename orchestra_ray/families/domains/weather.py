"""Weather domain: a week of city forecasts, and users with a home city, units and weather alerts.

An alert is keyed by (user, city, metric), so setting one again changes its threshold rather than
adding a row; a user keeps at most three. Thresholds must make sense for their metric.
"""

from __future__ import annotations

import random
from typing import Dict, List

from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.entities import DATES, person, pick, unique_ids
from orchestra_ray.families.domains.functions import domain_function, fail
from orchestra_ray.families.domains.tasks import Action, DomainTask, draft_task

NAME = "weather"
DESCRIPTION = "You run a weather service: read forecasts and user settings; set and delete weather alerts, home cities and units."

SCHEMA = """
CREATE TABLE forecasts (city TEXT NOT NULL, date TEXT NOT NULL, condition TEXT NOT NULL, high_c INTEGER NOT NULL,
    low_c INTEGER NOT NULL, rain_pct INTEGER NOT NULL, wind_kph INTEGER NOT NULL, PRIMARY KEY (city, date));
CREATE TABLE users (user_id TEXT PRIMARY KEY, name TEXT NOT NULL, home_city TEXT NOT NULL, units TEXT NOT NULL);
CREATE TABLE alerts (user_id TEXT NOT NULL, city TEXT NOT NULL, metric TEXT NOT NULL, threshold INTEGER NOT NULL,
    PRIMARY KEY (user_id, city, metric));
"""

CITIES = ("Oslo", "Lisbon", "Cairo", "Lima", "Osaka", "Denver", "Nairobi", "Dublin", "Perth", "Quebec", "Seville", "Hanoi")
CONDITIONS = ("sunny", "cloudy", "rain", "storm", "fog", "snow")
UNITS = ("metric", "imperial")
MAX_ALERTS = 3
# What each metric watches, and the thresholds that mean something for it.
METRICS = {
    "rain": ("chance of rain reaches {t}%", (0, 100)),
    "wind": ("wind reaches {t} km/h", (10, 150)),
    "heat": ("high reaches {t}°C", (0, 50)),
    "frost": ("low drops to {t}°C", (-30, 10)),
}


def populate(db: Database, rng: random.Random) -> None:
    forecasts = []
    for city in CITIES:
        base = rng.randint(-5, 30)
        for date in DATES:
            high = base + rng.randint(-4, 6)
            forecasts.append({"city": city, "date": date, "condition": rng.choice(CONDITIONS), "high_c": high,
                              "low_c": high - rng.randint(3, 12), "rain_pct": rng.randrange(0, 101, 5), "wind_kph": rng.randint(0, 70)})
    users, alerts = [], []
    for uid in unique_ids(rng, "W", 50, 100, 1000):
        first, last = person(rng)
        users.append({"user_id": uid, "name": f"{first} {last}", "home_city": rng.choice(CITIES), "units": rng.choices(UNITS, (3, 1))[0]})
        # A dict, not a set: its order is the draw order in every process.
        for city, metric in dict.fromkeys((rng.choice(CITIES), rng.choice(list(METRICS))) for _ in range(rng.randint(0, MAX_ALERTS))):
            low, high = METRICS[metric][1]
            alerts.append({"user_id": uid, "city": city, "metric": metric, "threshold": _threshold(rng, low, high)})
    for table, rows in (("forecasts", forecasts), ("users", users), ("alerts", alerts)):
        db.insert(table, rng.sample(rows, len(rows)))


def _threshold(rng: random.Random, low: int, high: int) -> int:
    return rng.randrange(low, high + 1, 5)


def _user(db: Database, user_id: str) -> Dict:
    row = db.one("SELECT * FROM users WHERE user_id = ?", (user_id,))
    return row if row is not None else fail(f"user {user_id} not found")


def _city(city: str) -> None:
    if city not in CITIES:
        fail(f"unknown city '{city[:40]}'; cities: {', '.join(CITIES)}")


def get_forecast(db: Database, city: str, date: str) -> Dict:
    _city(city)
    row = db.one("SELECT * FROM forecasts WHERE city = ? AND date = ?", (city, date))
    return row if row is not None else fail(f"no forecast for {city} on {date[:20]}; forecasts cover {DATES[0]} to {DATES[-1]}")


def get_user(db: Database, user_id: str) -> Dict:
    user = _user(db, user_id)
    rows = db.all("SELECT city, metric, threshold FROM alerts WHERE user_id = ? ORDER BY city, metric", (user_id,))
    return {**user, "alerts": rows}


def set_alert(db: Database, user_id: str, city: str, metric: str, threshold: int) -> Dict:
    _user(db, user_id)
    _city(city)
    low, high = METRICS[metric][1]
    if not low <= threshold <= high:
        fail(f"a {metric} threshold must be between {low} and {high}, got {threshold}")
    existing = db.one("SELECT threshold FROM alerts WHERE user_id = ? AND city = ? AND metric = ?", (user_id, city, metric))
    if existing is None:
        count = db.one("SELECT COUNT(*) AS n FROM alerts WHERE user_id = ?", (user_id,))["n"]
        if count >= MAX_ALERTS:
            fail(f"user {user_id} already has {MAX_ALERTS} alerts; delete one first")
        db.insert("alerts", [{"user_id": user_id, "city": city, "metric": metric, "threshold": threshold}])
    else:
        db.execute("UPDATE alerts SET threshold = ? WHERE user_id = ? AND city = ? AND metric = ?", (threshold, user_id, city, metric))
    return {"user_id": user_id, "city": city, "metric": metric, "threshold": threshold}


def delete_alert(db: Database, user_id: str, city: str, metric: str) -> Dict:
    _user(db, user_id)
    if not db.execute("DELETE FROM alerts WHERE user_id = ? AND city = ? AND metric = ?", (user_id, city, metric)):
        fail(f"user {user_id} has no {metric} alert for {city[:40]}")
    return {"user_id": user_id, "city": city, "metric": metric, "deleted": True}


def clear_alerts(db: Database, user_id: str) -> Dict:
    _user(db, user_id)
    n = db.execute("DELETE FROM alerts WHERE user_id = ?", (user_id,))
    if not n:
        fail(f"user {user_id} has no alerts")
    return {"user_id": user_id, "deleted": n}


def set_home_city(db: Database, user_id: str, city: str) -> Dict:
    user = _user(db, user_id)
    _city(city)
    if user["home_city"] == city:
        fail(f"user {user_id}'s home city is already {city}")
    db.execute("UPDATE users SET home_city = ? WHERE user_id = ?", (city, user_id))
    return {"user_id": user_id, "home_city": city}


def set_units(db: Database, user_id: str, units: str) -> Dict:
    user = _user(db, user_id)
    if user["units"] == units:
        fail(f"user {user_id} already uses {units} units")
    db.execute("UPDATE users SET units = ? WHERE user_id = ?", (units, user_id))
    return {"user_id": user_id, "units": units}


_UID = ("string", "user id, e.g. W123")
_CITY = ("string", "city name, e.g. Oslo")
_METRIC = ("string", "rain (%), wind (km/h), heat (high °C) or frost (low °C)", tuple(METRICS))

FUNCTIONS = [
    domain_function("get_forecast", "A city's forecast for a date.", {"city": _CITY, "date": ("string", "date YYYY-MM-DD")}, get_forecast, False),
    domain_function("get_user", "A user's settings and alerts.", {"user_id": _UID}, get_user, False),
    domain_function("set_alert", "Create or update a user's alert for a city and metric.",
                    {"user_id": _UID, "city": _CITY, "metric": _METRIC, "threshold": ("integer", "threshold", (-30, 150))}, set_alert, True),
    domain_function("delete_alert", "Delete one of a user's alerts.", {"user_id": _UID, "city": _CITY, "metric": _METRIC}, delete_alert, True),
    domain_function("clear_alerts", "Delete all of a user's alerts.", {"user_id": _UID}, clear_alerts, True),
    domain_function("set_home_city", "Change a user's home city.", {"user_id": _UID, "city": _CITY}, set_home_city, True),
    domain_function("set_units", "Switch a user's units.", {"user_id": _UID, "units": ("string", "units", UNITS)}, set_units, True),
]


def _alert_text(metric: str, threshold: int) -> str:
    return METRICS[metric][0].format(t=threshold)


def _new_alert(rng: random.Random) -> tuple:
    city, metric = rng.choice(CITIES), rng.choice(list(METRICS))
    low, high = METRICS[metric][1]
    return city, metric, _threshold(rng, low, high)


def t_set_alert(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    u = rng.choice(v["users"])
    city, metric, t = _new_alert(rng)
    text = rng.choice((f"I'm user {u['user_id']}. Alert me when the {_alert_text(metric, t)} in {city} (a {metric} alert, threshold {t}).",
                       f"Set a {metric} alert for {city} at {t} for user {u['user_id']}."))
    return draft_task(NAME, "set an alert", text, f"user {u['user_id']}",
                      [Action("set_alert", {"user_id": u["user_id"], "city": city, "metric": metric, "threshold": t})])


def t_delete_alert(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    if rng.random() < 0.85:
        a = rng.choice(v["alerts"])
        uid, city, metric = a["user_id"], a["city"], a["metric"]
    else:
        uid, (city, metric, _) = rng.choice(v["users"])["user_id"], _new_alert(rng)
    text = rng.choice((f"Remove my {metric} alert for {city}; my user id is {uid}.", f"User {uid} here: delete the {city} {metric} alert."))
    return draft_task(NAME, "delete an alert", text, f"user {uid}", [Action("delete_alert", {"user_id": uid, "city": city, "metric": metric})])


def t_home_city(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    u, city = rng.choice(v["users"]), rng.choice(CITIES)
    text = rng.choice((f"I just moved to {city}. Please make it my home city (user {u['user_id']}).",
                       f"Change the home city of user {u['user_id']} to {city}."))
    return draft_task(NAME, "change home city", text, f"user {u['user_id']}", [Action("set_home_city", {"user_id": u["user_id"], "city": city})])


def t_units(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    u = pick(rng, v["users"], lambda u: u["units"] == "metric", bias=0.5)
    units = "imperial" if u["units"] == "metric" else "metric"
    if rng.random() < 0.1:
        units = u["units"]
    text = rng.choice((f"Please switch my account {u['user_id']} to {units} units.", f"User {u['user_id']}: I prefer {units} units from now on."))
    return draft_task(NAME, "switch units", text, f"user {u['user_id']}", [Action("set_units", {"user_id": u["user_id"], "units": units})])


def t_check_then_alert(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    u, date = rng.choice(v["users"]), rng.choice(DATES)
    city, metric, t = _new_alert(rng)
    text = (f"What's the forecast for {city} on {date}? Also, as user {u['user_id']}, set a {metric} alert "
            f"for {city} with threshold {t}.")
    return draft_task(NAME, "read a forecast, then set an alert", text, f"user {u['user_id']}",
                      [Action("get_forecast", {"city": city, "date": date}),
                       Action("set_alert", {"user_id": u["user_id"], "city": city, "metric": metric, "threshold": t})])


def t_replace_alert(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    a = rng.choice(v["alerts"])
    city, metric, t = _new_alert(rng)
    text = (f"I'm user {a['user_id']}. Delete my {a['metric']} alert for {a['city']} and instead set a {metric} alert "
            f"for {city} at {t}.")
    return draft_task(NAME, "replace an alert", text, f"user {a['user_id']}",
                      [Action("delete_alert", {"user_id": a["user_id"], "city": a["city"], "metric": a["metric"]}),
                       Action("set_alert", {"user_id": a["user_id"], "city": city, "metric": metric, "threshold": t})])


def t_clear(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    u = pick(rng, v["users"], lambda u: any(a["user_id"] == u["user_id"] for a in v["alerts"]))
    text = rng.choice((f"Delete all of my weather alerts, please. I'm user {u['user_id']}.", f"Clear every alert of user {u['user_id']}."))
    return draft_task(NAME, "clear alerts", text, f"user {u['user_id']}", [Action("clear_alerts", {"user_id": u["user_id"]})])


def t_move_and_alert(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    u, city = rng.choice(v["users"]), rng.choice(CITIES)
    metric = rng.choice(list(METRICS))
    t = _threshold(rng, *METRICS[metric][1])
    text = f"I'm user {u['user_id']} and I moved to {city}: set it as my home city and add a {metric} alert there at {t}."
    return draft_task(NAME, "move and add an alert", text, f"user {u['user_id']}",
                      [Action("set_home_city", {"user_id": u["user_id"], "city": city}),
                       Action("set_alert", {"user_id": u["user_id"], "city": city, "metric": metric, "threshold": t})])


TEMPLATES = [(3, t_set_alert), (2, t_delete_alert), (2, t_home_city), (2, t_units), (1, t_check_then_alert), (1, t_replace_alert),
             (1, t_clear), (1, t_move_and_alert)]
