"""Airline domain: customers, flights by date, and reservations.

Rules: a cancelled flight takes no bookings and a flight has limited seats; a reservation is
cancelled once, returning its seats; a cabin change must change the cabin.
"""

from __future__ import annotations

import random
from typing import Dict, List

from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.entities import DATES, email_for, next_id, person, pick, unique_ids
from orchestra_ray.families.domains.functions import domain_function, fail
from orchestra_ray.families.domains.tasks import Action, DomainTask, draft_task

NAME = "airline"
DESCRIPTION = "You manage airline bookings: look up customers, reservations and flights; book, cancel, change cabins and update emails."

SCHEMA = """
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
    tier TEXT NOT NULL, miles INTEGER NOT NULL);
CREATE TABLE flights (flight_no TEXT NOT NULL, date TEXT NOT NULL, origin TEXT NOT NULL, destination TEXT NOT NULL,
    departs TEXT NOT NULL, status TEXT NOT NULL, seats_left INTEGER NOT NULL, price INTEGER NOT NULL,
    PRIMARY KEY (flight_no, date));
CREATE TABLE reservations (reservation_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, flight_no TEXT NOT NULL,
    date TEXT NOT NULL, cabin TEXT NOT NULL, passengers INTEGER NOT NULL, status TEXT NOT NULL);
"""

AIRPORTS = ("JFK", "LAX", "ORD", "SFO", "SEA", "BOS", "MIA", "DEN", "ATL", "PHX")
CABINS = ("economy", "business")


def populate(db: Database, rng: random.Random) -> None:
    customers = []
    for cid in unique_ids(rng, "C", 60, 1000, 10000):
        first, last = person(rng)
        customers.append({"customer_id": cid, "name": f"{first} {last}", "email": email_for(rng, first, last),
                          "tier": rng.choice(("regular", "regular", "silver", "gold")), "miles": rng.randrange(0, 90000, 250)})
    flights = []
    for number in unique_ids(rng, "OR", 20, 100, 1000):
        origin, destination = rng.sample(AIRPORTS, 2)
        departs = f"{rng.randint(6, 21):02d}:{rng.choice((0, 15, 30, 45)):02d}"
        for date in sorted(rng.sample(DATES, 2)):
            status = rng.choices(("scheduled", "delayed", "cancelled"), (80, 12, 8))[0]
            flights.append({"flight_no": number, "date": date, "origin": origin, "destination": destination, "departs": departs,
                            "status": status, "seats_left": rng.randint(0, 9), "price": rng.randrange(90, 600, 5)})
    reservations = []
    for rid in unique_ids(rng, "R", 100, 1000, 9000):
        f = rng.choice(flights)
        reservations.append({"reservation_id": rid, "customer_id": rng.choice(customers)["customer_id"], "flight_no": f["flight_no"],
                             "date": f["date"], "cabin": rng.choices(CABINS, (3, 1))[0], "passengers": rng.randint(1, 3),
                             "status": rng.choices(("booked", "cancelled"), (85, 15))[0]})
    # Inserted shuffled: nothing may depend on insertion order (the state hash sorts rows).
    for table, rows in (("customers", customers), ("flights", flights), ("reservations", reservations)):
        db.insert(table, rng.sample(rows, len(rows)))


def _customer(db: Database, customer_id: str) -> Dict:
    row = db.one("SELECT * FROM customers WHERE customer_id = ?", (customer_id,))
    return row if row is not None else fail(f"customer {customer_id} not found")


def _reservation(db: Database, reservation_id: str) -> Dict:
    row = db.one("SELECT * FROM reservations WHERE reservation_id = ?", (reservation_id,))
    return row if row is not None else fail(f"reservation {reservation_id} not found")


def _flight(db: Database, flight_no: str, date: str) -> Dict:
    row = db.one("SELECT * FROM flights WHERE flight_no = ? AND date = ?", (flight_no, date))
    return row if row is not None else fail(f"flight {flight_no} on {date} not found")


def get_customer(db: Database, customer_id: str) -> Dict:
    row = _customer(db, customer_id)
    ids = [r["reservation_id"] for r in db.all("SELECT reservation_id FROM reservations WHERE customer_id = ? ORDER BY reservation_id", (customer_id,))]
    return {**row, "reservations": ids}


def get_reservation(db: Database, reservation_id: str) -> Dict:
    return _reservation(db, reservation_id)


def get_flight_status(db: Database, flight_no: str, date: str) -> Dict:
    return _flight(db, flight_no, date)


def book_flight(db: Database, customer_id: str, flight_no: str, date: str, cabin: str, passengers: int) -> Dict:
    _customer(db, customer_id)
    flight = _flight(db, flight_no, date)
    if flight["status"] == "cancelled":
        fail(f"flight {flight_no} on {date} is cancelled")
    if flight["seats_left"] < passengers:
        fail(f"flight {flight_no} on {date} has only {flight['seats_left']} seats left")
    rid = next_id([r["reservation_id"] for r in db.all("SELECT reservation_id FROM reservations")], "R")
    db.insert("reservations", [{"reservation_id": rid, "customer_id": customer_id, "flight_no": flight_no, "date": date,
                                "cabin": cabin, "passengers": passengers, "status": "booked"}])
    db.execute("UPDATE flights SET seats_left = seats_left - ? WHERE flight_no = ? AND date = ?", (passengers, flight_no, date))
    fare = flight["price"] * passengers * (2 if cabin == "business" else 1)
    return {"reservation_id": rid, "status": "booked", "fare": fare}


def cancel_reservation(db: Database, reservation_id: str) -> Dict:
    r = _reservation(db, reservation_id)
    if r["status"] == "cancelled":
        fail(f"reservation {reservation_id} is already cancelled")
    db.execute("UPDATE reservations SET status = 'cancelled' WHERE reservation_id = ?", (reservation_id,))
    db.execute("UPDATE flights SET seats_left = seats_left + ? WHERE flight_no = ? AND date = ?", (r["passengers"], r["flight_no"], r["date"]))
    return {"reservation_id": reservation_id, "status": "cancelled"}


def change_cabin(db: Database, reservation_id: str, cabin: str) -> Dict:
    r = _reservation(db, reservation_id)
    if r["status"] == "cancelled":
        fail(f"reservation {reservation_id} is cancelled")
    if r["cabin"] == cabin:
        fail(f"reservation {reservation_id} is already in {cabin}")
    db.execute("UPDATE reservations SET cabin = ? WHERE reservation_id = ?", (cabin, reservation_id))
    return {"reservation_id": reservation_id, "cabin": cabin}


def update_email(db: Database, customer_id: str, email: str) -> Dict:
    _customer(db, customer_id)
    if "@" not in email or " " in email:
        fail(f"'{email[:64]}' is not an email address")
    db.execute("UPDATE customers SET email = ? WHERE customer_id = ?", (email, customer_id))
    return {"customer_id": customer_id, "email": email}


_CID = ("string", "customer id, e.g. C1234")
_RID = ("string", "reservation id, e.g. R4821")
_FNO = ("string", "flight number, e.g. OR312")
_DATE = ("string", "date YYYY-MM-DD")

FUNCTIONS = [
    domain_function("get_customer", "Look up a customer and their reservation ids.", {"customer_id": _CID}, get_customer, False),
    domain_function("get_reservation", "Look up a reservation.", {"reservation_id": _RID}, get_reservation, False),
    domain_function("get_flight_status", "Status, route, departure time, seats left and price of a flight on a date.",
                    {"flight_no": _FNO, "date": _DATE}, get_flight_status, False),
    domain_function("book_flight", "Book seats on a flight for a customer.",
                    {"customer_id": _CID, "flight_no": _FNO, "date": _DATE, "cabin": ("string", "cabin", CABINS),
                     "passengers": ("integer", "number of passengers", (1, 9))}, book_flight, True),
    domain_function("cancel_reservation", "Cancel a reservation.", {"reservation_id": _RID}, cancel_reservation, True),
    domain_function("change_cabin", "Move a reservation to another cabin.",
                    {"reservation_id": _RID, "cabin": ("string", "new cabin", CABINS)}, change_cabin, True),
    domain_function("update_email", "Change a customer's email address.",
                    {"customer_id": _CID, "email": ("string", "new email address")}, update_email, True),
]


def _seats(n: int, cabin: str) -> str:
    return f"{n} {cabin} seat" + ("s" if n > 1 else "")


def t_cancel(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    r = pick(rng, v["reservations"], lambda r: r["status"] == "booked")
    text = rng.choice((f"Please cancel my reservation {r['reservation_id']}.",
                       f"I'm customer {r['customer_id']} and I need to cancel reservation {r['reservation_id']}."))
    return draft_task(NAME, "cancel a reservation", text, f"reservation {r['reservation_id']}", [Action("cancel_reservation", {"reservation_id": r["reservation_id"]})])


def t_book(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    c, f = rng.choice(v["customers"]), pick(rng, v["flights"], lambda f: f["status"] != "cancelled" and f["seats_left"] > 1)
    n, cabin = rng.choice((1, 1, 2, 2, 3)), rng.choices(CABINS, (3, 1))[0]
    text = rng.choice((
        f"Hi, this is {c['name']}, customer id {c['customer_id']}. Please book {_seats(n, cabin)} on flight {f['flight_no']} on {f['date']}.",
        f"Book flight {f['flight_no']} on {f['date']} for customer {c['customer_id']}: {_seats(n, cabin)}.",
    ))
    args = {"customer_id": c["customer_id"], "flight_no": f["flight_no"], "date": f["date"], "cabin": cabin, "passengers": n}
    return draft_task(NAME, "book a flight", text, f"customer {c['customer_id']}", [Action("book_flight", args)])


def t_change_cabin(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    r = pick(rng, v["reservations"], lambda r: r["status"] == "booked")
    cabin = rng.choices((("business" if r["cabin"] == "economy" else "economy"), r["cabin"]), (4, 1))[0]
    text = rng.choice((f"Please move reservation {r['reservation_id']} to {cabin} class.",
                       f"Change the cabin of my reservation {r['reservation_id']} to {cabin}."))
    return draft_task(NAME, "change cabin", text, f"reservation {r['reservation_id']}",
                      [Action("change_cabin", {"reservation_id": r["reservation_id"], "cabin": cabin})])


def t_update_email(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    c = rng.choice(v["customers"])
    first, last = c["name"].lower().split()
    email = f"{first}.{last}@" + rng.choice(("example.com", "mail.test", "inbox.test", "post.test"))
    text = f"I'm {c['name']} (customer {c['customer_id']}). Please change my email to {email}."
    return draft_task(NAME, "update email", text, f"customer {c['customer_id']}",
                      [Action("update_email", {"customer_id": c["customer_id"], "email": email})])


def t_rebook(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    r = pick(rng, v["reservations"], lambda r: r["status"] == "booked")
    f = pick(rng, v["flights"], lambda f: f["status"] != "cancelled" and f["seats_left"] >= r["passengers"])
    n, cabin = r["passengers"], r["cabin"]
    text = (f"I'm customer {r['customer_id']}. Cancel my reservation {r['reservation_id']} and book me instead on flight "
            f"{f['flight_no']} on {f['date']}: {_seats(n, cabin)}.")
    args = {"customer_id": r["customer_id"], "flight_no": f["flight_no"], "date": f["date"], "cabin": cabin, "passengers": n}
    return draft_task(NAME, "cancel and rebook", text, f"customer {r['customer_id']}, reservation {r['reservation_id']}",
                      [Action("cancel_reservation", {"reservation_id": r["reservation_id"]}), Action("book_flight", args)])


def t_cancel_two(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    a, b = (pick(rng, v["reservations"], lambda r: r["status"] == "booked") for _ in range(2))
    text = f"Please cancel both of my reservations, {a['reservation_id']} and {b['reservation_id']}."
    return draft_task(NAME, "cancel two reservations", text, f"reservations {a['reservation_id']}, {b['reservation_id']}",
                      [Action("cancel_reservation", {"reservation_id": a["reservation_id"]}),
                       Action("cancel_reservation", {"reservation_id": b["reservation_id"]})])


def t_upgrade_and_email(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    r = pick(rng, v["reservations"], lambda r: r["status"] == "booked" and r["cabin"] == "economy")
    c = next(c for c in v["customers"] if c["customer_id"] == r["customer_id"])
    email = f"{c['name'].lower().replace(' ', '')}@" + rng.choice(("example.com", "mail.test"))
    text = (f"I'm customer {c['customer_id']}. Upgrade my reservation {r['reservation_id']} to business class, "
            f"and change my email to {email}.")
    return draft_task(NAME, "upgrade and update email", text, f"customer {c['customer_id']}, reservation {r['reservation_id']}",
                      [Action("change_cabin", {"reservation_id": r["reservation_id"], "cabin": "business"}),
                       Action("update_email", {"customer_id": c["customer_id"], "email": email})])


def t_check_then_book(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    c, f = rng.choice(v["customers"]), pick(rng, v["flights"], lambda f: f["status"] != "cancelled" and f["seats_left"] >= 1)
    text = (f"I'm customer {c['customer_id']}. Is flight {f['flight_no']} on {f['date']} still on? "
            f"If so, book me 1 economy seat on it.")
    args = {"customer_id": c["customer_id"], "flight_no": f["flight_no"], "date": f["date"], "cabin": "economy", "passengers": 1}
    return draft_task(NAME, "check a flight, then book", text, f"customer {c['customer_id']}",
                      [Action("get_flight_status", {"flight_no": f["flight_no"], "date": f["date"]}), Action("book_flight", args)])


TEMPLATES = [(3, t_cancel), (3, t_book), (2, t_change_cabin), (2, t_update_email), (1, t_rebook), (1, t_cancel_two), (1, t_upgrade_and_email),
             (1, t_check_then_book)]
