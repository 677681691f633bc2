"""Retail domain: customers, a product catalogue with stock, and single-product orders.

Rules: an order needs enough stock; only a pending order can be cancelled or readdressed (a
cancelled order returns its stock); only a delivered order can be returned, once.
"""

from __future__ import annotations

import random
from typing import Dict, List

from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.entities import email_for, next_id, person, pick, street_address, unique_ids
from orchestra_ray.families.domains.functions import domain_function, fail
from orchestra_ray.families.domains.tasks import Action, DomainTask, draft_task

NAME = "retail"
DESCRIPTION = "You run an online shop's order desk: look up customers, orders and products; place, cancel, return and readdress orders."

SCHEMA = """
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, address TEXT NOT NULL);
CREATE TABLE products (product_id TEXT PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
    price INTEGER NOT NULL, stock INTEGER NOT NULL);
CREATE TABLE orders (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL, total INTEGER NOT NULL, status TEXT NOT NULL, address TEXT NOT NULL,
    return_reason TEXT);
"""

CATALOGUE = (
    ("desk lamp", "home"), ("kettle", "kitchen"), ("yoga mat", "sports"), ("backpack", "travel"),
    ("headphones", "electronics"), ("water bottle", "sports"), ("coffee grinder", "kitchen"), ("phone case", "electronics"),
    ("throw blanket", "home"), ("running shoes", "sports"), ("travel pillow", "travel"), ("keyboard", "electronics"),
    ("frying pan", "kitchen"), ("picture frame", "home"), ("umbrella", "travel"), ("power bank", "electronics"),
)
COLOURS = ("black", "white", "blue", "green", "red", "grey")
ORDER_STATUSES = ("pending", "shipped", "delivered", "cancelled", "returned")
RETURN_REASONS = ("damaged", "wrong item", "no longer needed")


def populate(db: Database, rng: random.Random) -> None:
    customers = []
    for cid in unique_ids(rng, "U", 50, 100, 1000):
        first, last = person(rng)
        customers.append({"customer_id": cid, "name": f"{first} {last}", "email": email_for(rng, first, last),
                          "address": street_address(rng)})
    products = []
    for pid, (item, category) in zip(unique_ids(rng, "P", len(CATALOGUE), 100, 1000), rng.sample(CATALOGUE, len(CATALOGUE))):
        products.append({"product_id": pid, "name": f"{rng.choice(COLOURS)} {item}", "category": category,
                         "price": rng.randrange(8, 250), "stock": rng.choice((0, 1, 2, 3, 5, 8, 12, 20, 40))})
    orders = []
    for oid in unique_ids(rng, "O", 120, 1000, 10000):
        c, p = rng.choice(customers), rng.choice(products)
        quantity = rng.choice((1, 1, 1, 2, 3))
        status = rng.choices(ORDER_STATUSES, (40, 15, 35, 6, 4))[0]
        orders.append({"order_id": oid, "customer_id": c["customer_id"], "product_id": p["product_id"], "quantity": quantity,
                       "total": p["price"] * quantity, "status": status, "address": c["address"],
                       "return_reason": rng.choice(RETURN_REASONS) if status == "returned" else None})
    for table, rows in (("customers", customers), ("products", products), ("orders", orders)):
        db.insert(table, rng.sample(rows, len(rows)))


def _customer(db: Database, customer_id: str) -> Dict:
    row = db.one("SELECT * FROM customers WHERE customer_id = ?", (customer_id,))
    return row if row is not None else fail(f"customer {customer_id} not found")


def _order(db: Database, order_id: str) -> Dict:
    row = db.one("SELECT * FROM orders WHERE order_id = ?", (order_id,))
    return row if row is not None else fail(f"order {order_id} not found")


def _product(db: Database, product_id: str) -> Dict:
    row = db.one("SELECT * FROM products WHERE product_id = ?", (product_id,))
    return row if row is not None else fail(f"product {product_id} not found")


def get_customer(db: Database, customer_id: str) -> Dict:
    row = _customer(db, customer_id)
    ids = [r["order_id"] for r in db.all("SELECT order_id FROM orders WHERE customer_id = ? ORDER BY order_id", (customer_id,))]
    return {**row, "orders": ids}


def get_order(db: Database, order_id: str) -> Dict:
    return {k: v for k, v in _order(db, order_id).items() if v is not None}


def get_product(db: Database, product_id: str) -> Dict:
    return _product(db, product_id)


def place_order(db: Database, customer_id: str, product_id: str, quantity: int) -> Dict:
    customer = _customer(db, customer_id)
    product = _product(db, product_id)
    if product["stock"] < quantity:
        fail(f"product {product_id} has only {product['stock']} in stock, {quantity} requested")
    oid = next_id([r["order_id"] for r in db.all("SELECT order_id FROM orders")], "O")
    total = product["price"] * quantity
    db.insert("orders", [{"order_id": oid, "customer_id": customer_id, "product_id": product_id, "quantity": quantity,
                          "total": total, "status": "pending", "address": customer["address"], "return_reason": None}])
    db.execute("UPDATE products SET stock = stock - ? WHERE product_id = ?", (quantity, product_id))
    return {"order_id": oid, "status": "pending", "total": total}


def cancel_order(db: Database, order_id: str) -> Dict:
    order = _order(db, order_id)
    if order["status"] != "pending":
        fail(f"order {order_id} is {order['status']}; only pending orders can be cancelled")
    db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (order_id,))
    db.execute("UPDATE products SET stock = stock + ? WHERE product_id = ?", (order["quantity"], order["product_id"]))
    return {"order_id": order_id, "status": "cancelled", "refund": order["total"]}


def return_order(db: Database, order_id: str, reason: str) -> Dict:
    order = _order(db, order_id)
    if order["status"] != "delivered":
        fail(f"order {order_id} is {order['status']}; only delivered orders can be returned")
    db.execute("UPDATE orders SET status = 'returned', return_reason = ? WHERE order_id = ?", (reason, order_id))
    db.execute("UPDATE products SET stock = stock + ? WHERE product_id = ?", (order["quantity"], order["product_id"]))
    return {"order_id": order_id, "status": "returned", "refund": order["total"]}


def change_address(db: Database, order_id: str, address: str) -> Dict:
    order = _order(db, order_id)
    if order["status"] != "pending":
        fail(f"order {order_id} is {order['status']}; only a pending order's address can change")
    if not address.strip() or len(address) > 120:
        fail("address must be 1 to 120 characters")
    if order["address"] == address:
        fail(f"order {order_id} already ships to {address}")
    db.execute("UPDATE orders SET address = ? WHERE order_id = ?", (address, order_id))
    return {"order_id": order_id, "address": address}


_CID = ("string", "customer id, e.g. U123")
_OID = ("string", "order id, e.g. O4821")
_PID = ("string", "product id, e.g. P312")

FUNCTIONS = [
    domain_function("get_customer", "Look up a customer and their order ids.", {"customer_id": _CID}, get_customer, False),
    domain_function("get_order", "Look up an order.", {"order_id": _OID}, get_order, False),
    domain_function("get_product", "Name, price and stock of a product.", {"product_id": _PID}, get_product, False),
    domain_function("place_order", "Order a product for a customer, shipped to their address.",
                    {"customer_id": _CID, "product_id": _PID, "quantity": ("integer", "how many", (1, 20))}, place_order, True),
    domain_function("cancel_order", "Cancel a pending order.", {"order_id": _OID}, cancel_order, True),
    domain_function("return_order", "Return a delivered order.",
                    {"order_id": _OID, "reason": ("string", "why", RETURN_REASONS)}, return_order, True),
    domain_function("change_address", "Change the shipping address of a pending order.",
                    {"order_id": _OID, "address": ("string", "new address")}, change_address, True),
]


def _pending(o: Dict) -> bool:
    return o["status"] == "pending"


def t_cancel(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    o = pick(rng, v["orders"], _pending)
    text = rng.choice((f"Please cancel my order {o['order_id']}.",
                       f"I'm customer {o['customer_id']}; I changed my mind about order {o['order_id']}, cancel it please."))
    return draft_task(NAME, "cancel an order", text, f"order {o['order_id']}", [Action("cancel_order", {"order_id": o["order_id"]})])


def t_place(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    c, p = rng.choice(v["customers"]), pick(rng, v["products"], lambda p: p["stock"] >= 2)
    n = rng.choice((1, 1, 2, 3))
    text = rng.choice((f"I'm customer {c['customer_id']}. Please order {n} of product {p['product_id']} ({p['name']}) for me.",
                       f"Place an order for customer {c['customer_id']}: product {p['product_id']}, quantity {n}."))
    return draft_task(NAME, "place an order", text, f"customer {c['customer_id']}",
                      [Action("place_order", {"customer_id": c["customer_id"], "product_id": p["product_id"], "quantity": n})])


def t_return(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    o = pick(rng, v["orders"], lambda o: o["status"] == "delivered")
    reason = rng.choice(RETURN_REASONS)
    phrase = {"damaged": "it arrived damaged", "wrong item": "you sent the wrong item", "no longer needed": "I no longer need it"}[reason]
    text = f"I'd like to return order {o['order_id']}: {phrase} (reason: {reason})."
    return draft_task(NAME, "return an order", text, f"order {o['order_id']}",
                      [Action("return_order", {"order_id": o["order_id"], "reason": reason})])


def t_readdress(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    o = pick(rng, v["orders"], _pending)
    address = street_address(rng)
    text = rng.choice((f"Please ship my order {o['order_id']} to {address} instead.",
                       f"Change the delivery address of order {o['order_id']} to: {address}"))
    return draft_task(NAME, "change an order's address", text, f"order {o['order_id']}",
                      [Action("change_address", {"order_id": o["order_id"], "address": address})])


def t_check_then_order(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    c, p = rng.choice(v["customers"]), pick(rng, v["products"], lambda p: p["stock"] >= 1)
    text = (f"I'm customer {c['customer_id']}. Check whether product {p['product_id']} is in stock, "
            f"and if it is, order 1 for me.")
    return draft_task(NAME, "check stock, then order", text, f"customer {c['customer_id']}",
                      [Action("get_product", {"product_id": p["product_id"]}),
                       Action("place_order", {"customer_id": c["customer_id"], "product_id": p["product_id"], "quantity": 1})])


def t_exchange(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    o = pick(rng, v["orders"], _pending)
    p = pick(rng, v["products"], lambda p: p["stock"] >= o["quantity"] and p["product_id"] != o["product_id"])
    text = (f"I'm customer {o['customer_id']}. Cancel order {o['order_id']} and order {o['quantity']} of product "
            f"{p['product_id']} instead.")
    return draft_task(NAME, "cancel and reorder", text, f"customer {o['customer_id']}, order {o['order_id']}",
                      [Action("cancel_order", {"order_id": o["order_id"]}),
                       Action("place_order", {"customer_id": o["customer_id"], "product_id": p["product_id"], "quantity": o["quantity"]})])


def t_return_and_cancel(v: Dict[str, List[Dict]], rng: random.Random) -> DomainTask:
    a = pick(rng, v["orders"], lambda o: o["status"] == "delivered")
    b = pick(rng, v["orders"], _pending)
    reason = rng.choice(RETURN_REASONS)
    text = f"Two things: return order {a['order_id']} (reason: {reason}), and cancel order {b['order_id']}."
    return draft_task(NAME, "return one order, cancel another", text, f"orders {a['order_id']}, {b['order_id']}",
                      [Action("return_order", {"order_id": a["order_id"], "reason": reason}),
                       Action("cancel_order", {"order_id": b["order_id"]})])


TEMPLATES = [(3, t_cancel), (3, t_place), (2, t_return), (2, t_readdress), (1, t_check_then_order), (1, t_exchange),
             (1, t_return_and_cancel)]
