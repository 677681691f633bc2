"""Bank domain: customers, their checking and savings accounts, debit cards and a ledger.

Rules: money moves only out of an open account holding enough, into another open account; a card is
blocked once, and a blocked card's limit cannot change. Ledger rows carry no id, so two payments
made in either order leave the same state.
"""

from __future__ import annotations

import random
from typing import Dict, List

from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.entities import person, pick, unique_ids
from orchestra_ray.families.domains.functions import domain_function, fail
from orchestra_ray.families.domains.tasks import Action, DomainTask, draft_task

NAME = "bank"
DESCRIPTION = "You are a bank's service desk: read balances, accounts and cards; transfer funds, pay bills, block cards and set card limits."

SCHEMA = """
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE accounts (account_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, kind TEXT NOT NULL,
    balance INTEGER NOT NULL, status TEXT NOT NULL);
CREATE TABLE cards (card_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, status TEXT NOT NULL, daily_limit INTEGER NOT NULL);
CREATE TABLE ledger (account_id TEXT NOT NULL, amount INTEGER NOT NULL, kind TEXT NOT NULL, counterparty TEXT NOT NULL);
"""

PAYEES = ("City Power", "Metro Water", "Fiber Net", "Home Insurance", "Phone Co")
LIMITS = (100, 5000)


def populate(db: Database, rng: random.Random) -> None:
    customers, accounts, cards = [], [], []
    account_ids = iter(unique_ids(rng, "A", 110, 10000, 100000))
    card_ids = iter(unique_ids(rng, "K", 80, 1000, 10000))
    for cid in unique_ids(rng, "B", 50, 100, 1000):
        first, last = person(rng)
        customers.append({"customer_id": cid, "name": f"{first} {last}"})
        for kind in ("checking", "savings") if rng.random() < 0.7 else ("checking",):
            aid = next(account_ids)
            accounts.append({"account_id": aid, "customer_id": cid, "kind": kind, "balance": rng.randrange(0, 20000, 5),
                             "status": rng.choices(("open", "frozen"), (92, 8))[0]})
            if kind == "checking":
                cards.append({"card_id": next(card_ids), "account_id": aid, "status": rng.choices(("active", "blocked"), (9, 1))[0],
                              "daily_limit": rng.randrange(500, 3001, 250)})
    ledger = [{"account_id": a["account_id"], "amount": a["balance"], "kind": "opening", "counterparty": "bank"} for a in accounts]
    for table, rows in (("customers", customers), ("accounts", accounts), ("cards", cards), ("ledger", ledger)):
        db.insert(table, rng.sample(rows, len(rows)))


def _account(db: Database, account_id: str) -> Dict:
    row = db.one("SELECT * FROM accounts WHERE account_id = ?", (account_id,))
    return row if row is not None else fail(f"account {account_id} not found")


def _card(db: Database, card_id: str) -> Dict:
    row = db.one("SELECT * FROM cards WHERE card_id = ?", (card_id,))
    return row if row is not None else fail(f"card {card_id} not found")


def _debit(db: Database, account: Dict, amount: int, kind: str, counterparty: str) -> None:
    if account["status"] != "open":
        fail(f"account {account['account_id']} is {account['status']}; no money can leave it")
    if account["balance"] < amount:
        fail(f"insufficient funds: account {account['account_id']} holds {account['balance']}, {amount} requested")
    db.execute("UPDATE accounts SET balance = balance - ? WHERE account_id = ?", (amount, account["account_id"]))
    db.insert("ledger", [{"account_id": account["account_id"], "amount": -amount, "kind": kind, "counterparty": counterparty}])


def get_balance(db: Database, account_id: str) -> Dict:
    a = _account(db, account_id)
    return {"account_id": account_id, "kind": a["kind"], "balance": a["balance"], "status": a["status"]}


def list_accounts(db: Database, customer_id: str) -> Dict:
    c = db.one("SELECT * FROM customers WHERE customer_id = ?", (customer_id,))
    if c is None:
        fail(f"customer {customer_id} not found")
    rows = db.all("SELECT account_id, kind, status FROM accounts WHERE customer_id = ? ORDER BY account_id", (customer_id,))
    return {**c, "accounts": rows}


def get_card(db: Database, card_id: str) -> Dict:
    return _card(db, card_id)


def transfer_funds(db: Database, from_account: str, to_account: str, amount: int) -> Dict:
    if from_account == to_account:
        fail("from_account and to_account must differ")
    source, target = _account(db, from_account), _account(db, to_account)
    if target["status"] != "open":
        fail(f"account {to_account} is {target['status']}; it cannot receive money")
    _debit(db, source, amount, "transfer", to_account)
    db.execute("UPDATE accounts SET balance = balance + ? WHERE account_id = ?", (amount, to_account))
    db.insert("ledger", [{"account_id": to_account, "amount": amount, "kind": "transfer", "counterparty": from_account}])
    return {"from_account": from_account, "to_account": to_account, "amount": amount, "balance": source["balance"] - amount}


def pay_bill(db: Database, account_id: str, payee: str, amount: int) -> Dict:
    account = _account(db, account_id)
    _debit(db, account, amount, "bill", payee)
    return {"account_id": account_id, "payee": payee, "amount": amount, "balance": account["balance"] - amount}


def block_card(db: Database, card_id: str) -> Dict:
    card = _card(db, card_id)
    if card["status"] == "blocked":
        fail(f"card {card_id} is already blocked")
    db.execute("UPDATE cards SET status = 'blocked' WHERE card_id = ?", (card_id,))
    return {"card_id": card_id, "status": "blocked"}


def set_card_limit(db: Database, card_id: str, daily_limit: int) -> Dict:
    card = _card(db, card_id)
    if card["status"] != "active":
        fail(f"card {card_id} is {card['status']}; its limit cannot change")
    if daily_limit % 50:
        fail(f"daily_limit must be a multiple of 50, got {daily_limit}")
    db.execute("UPDATE cards SET daily_limit = ? WHERE card_id = ?", (daily_limit, card_id))
    return {"card_id": card_id, "daily_limit": daily_limit}


_AID = ("string", "account id, e.g. A12345")
_KID = ("string", "card id, e.g. K1234")
_AMOUNT = ("integer", "whole dollars", (1, 100_000))

FUNCTIONS = [
    domain_function("get_balance", "Balance and status of an account.", {"account_id": _AID}, get_balance, False),
    domain_function("list_accounts", "A customer's accounts.", {"customer_id": ("string", "customer id, e.g. B123")}, list_accounts, False),
    domain_function("get_card", "Status and daily limit of a card.", {"card_id": _KID}, get_card, False),
    domain_function("transfer_funds", "Move money between two accounts.",
                    {"from_account": _AID, "to_account": _AID, "amount": _AMOUNT}, transfer_funds, True),
    domain_function("pay_bill", "Pay a bill from an account.",
                    {"account_id": _AID, "payee": ("string", "payee", PAYEES), "amount": _AMOUNT}, pay_bill, True),
    domain_function("block_card", "Block a card (lost or stolen).", {"card_id": _KID}, block_card, True),
    domain_function("set_card_limit", "Set a card's daily spending limit (multiple of 50).",
                    {"card_id": _KID, "daily_limit": ("integer", "whole dollars", LIMITS)}, set_card_limit, True),
]


def _amount(rng: random.Random, account: Dict) -> int:
    """Usually affordable; sometimes more than the balance, as a careless request would be."""
    if rng.random() < 0.85 and account["balance"] >= 10:
        return rng.randint(1, account["balance"] // 10) * 5 if account["balance"] >= 50 else rng.randint(1, account["balance"])
    return account["balance"] + rng.randrange(5, 500, 5)


def _open(a: Dict) -> bool:
    return a["status"] == "open" and a["balance"] >= 10


def _pair(v: Dict[str, List[Dict]], rng: random.Random) -> List[Dict]:
    """A customer's checking and savings accounts, in random order."""
    by_customer: Dict[str, List[Dict]] = {}
    for a in v["accounts"]:
        by_customer.setdefault(a["customer_id"], []).append(a)
    both = sorted(c for c, rows in by_customer.items() if len(rows) == 2)
    rows = sorted(by_customer[rng.choice(both)], key=lambda a: a["kind"])
    return rows if rng.random() < 0.5 else rows[::-1]


def t_transfer_own(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    source, target = _pair(v, rng)
    amount = _amount(rng, source)
    text = rng.choice((f"Move ${amount} from my {source['kind']} account {source['account_id']} to my {target['kind']} account {target['account_id']}.",
                       f"Please transfer {amount} dollars from {source['account_id']} into {target['account_id']}."))
    return draft_task(NAME, "transfer between own accounts", text, f"accounts {source['account_id']}, {target['account_id']}",
                      [Action("transfer_funds", {"from_account": source["account_id"], "to_account": target["account_id"], "amount": amount})])


def t_transfer_other(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    source = pick(rng, v["accounts"], _open)
    target = rng.choice([a for a in v["accounts"] if a["customer_id"] != source["customer_id"]])
    amount = _amount(rng, source)
    who = rng.choice(("my landlord", "a friend", "my sister", "the plumber"))
    text = f"I need to send ${amount} to {who}, account {target['account_id']}, from my account {source['account_id']}."
    return draft_task(NAME, "send money to someone else", text, f"account {source['account_id']}",
                      [Action("transfer_funds", {"from_account": source["account_id"], "to_account": target["account_id"], "amount": amount})])


def t_pay_bill(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    a, payee = pick(rng, v["accounts"], _open), rng.choice(PAYEES)
    amount = _amount(rng, a)
    text = rng.choice((f"Pay my {payee} bill of ${amount} from account {a['account_id']}.",
                       f"Please send {amount} dollars to {payee} from {a['account_id']}; it's my monthly bill."))
    return draft_task(NAME, "pay a bill", text, f"account {a['account_id']}",
                      [Action("pay_bill", {"account_id": a["account_id"], "payee": payee, "amount": amount})])


def t_block_card(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    k = pick(rng, v["cards"], lambda k: k["status"] == "active", bias=0.85)
    text = rng.choice((f"I lost my card {k['card_id']}. Please block it.", f"My card {k['card_id']} was stolen, block it right away."))
    return draft_task(NAME, "block a card", text, f"card {k['card_id']}", [Action("block_card", {"card_id": k["card_id"]})])


def t_set_limit(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    k = pick(rng, v["cards"], lambda k: k["status"] == "active", bias=0.85)
    limit = rng.randrange(500, 3001, 250)
    text = rng.choice((f"Set the daily limit of my card {k['card_id']} to ${limit}.",
                       f"Could you change card {k['card_id']}'s daily spending limit to {limit} dollars?"))
    return draft_task(NAME, "set a card limit", text, f"card {k['card_id']}",
                      [Action("set_card_limit", {"card_id": k["card_id"], "daily_limit": limit})])


def t_check_then_pay(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    a, payee = pick(rng, v["accounts"], _open), rng.choice(PAYEES)
    amount = _amount(rng, a)
    text = f"Check the balance of account {a['account_id']}, then pay my {payee} bill of ${amount} from it."
    return draft_task(NAME, "check a balance, then pay a bill", text, f"account {a['account_id']}",
                      [Action("get_balance", {"account_id": a["account_id"]}),
                       Action("pay_bill", {"account_id": a["account_id"], "payee": payee, "amount": amount})])


def t_block_and_move(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    checking, savings = sorted(_pair(v, rng), key=lambda a: a["kind"])
    card = next((k for k in v["cards"] if k["account_id"] == checking["account_id"]), None) or rng.choice(v["cards"])
    amount = _amount(rng, checking)
    text = (f"My card {card['card_id']} was stolen. Block it, and move ${amount} from checking {checking['account_id']} "
            f"to my savings {savings['account_id']} to be safe.")
    return draft_task(NAME, "block a card and move money", text, f"card {card['card_id']}",
                      [Action("block_card", {"card_id": card["card_id"]}),
                       Action("transfer_funds", {"from_account": checking["account_id"], "to_account": savings["account_id"], "amount": amount})])


def t_two_bills(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    a = pick(rng, v["accounts"], _open)
    (p1, p2), amounts = rng.sample(PAYEES, 2), (_amount(rng, a), _amount(rng, a))
    text = f"From account {a['account_id']}, pay {p1} ${amounts[0]} and {p2} ${amounts[1]}."
    return draft_task(NAME, "pay two bills", text, f"account {a['account_id']}",
                      [Action("pay_bill", {"account_id": a["account_id"], "payee": p1, "amount": amounts[0]}),
                       Action("pay_bill", {"account_id": a["account_id"], "payee": p2, "amount": amounts[1]})])


TEMPLATES = [(3, t_transfer_own), (2, t_transfer_other), (3, t_pay_bill), (2, t_block_card), (2, t_set_limit),
             (1, t_check_then_pay), (1, t_block_and_move), (1, t_two_bills)]
