"""A stand-in for Stripe's HTTP API on loopback, so the real ``stripe`` SDK and dj-stripe's sync run in tests.

It speaks the endpoints billing and dj-stripe call, with Stripe's form encoding, JSON
answers, error shape, ``Authorization: Bearer`` key check and ``Idempotency-Key`` replay:

- ``POST /v1/checkout/sessions``, ``GET /v1/checkout/sessions/{id}``, ``GET /v1/checkout/sessions``
  (``created[gte]``, ``limit``, ``starting_after``, ``expand[]`` of ``data.payment_intent`` and
  ``data.payment_intent.latest_charge``), ``POST /v1/checkout/sessions/{id}/expire``;
- ``POST /v1/refunds``, ``GET /v1/refunds/{id}``;
- what dj-stripe's sync fetches: ``GET /v1/account``, ``/v1/payment_intents/{id}``,
  ``/v1/charges/{id}``, ``/v1/payment_methods/{id}``, ``/v1/balance_transactions/{id}``,
  ``/v1/disputes/{id}``, ``/v1/customers/{id}``.

Anything else answers Stripe's 404 and is kept in ``unknown_requests`` (tests assert it stays
empty). The test side plays the customer and Stripe's own machinery through methods:
``pay(session_id)`` (a card payment; ``async_payment=True`` for a slow method, then
``settle_async``), ``expire``, ``refund``, ``dispute``/``close_dispute``, each returning the
object as Stripe would put it in an event; ``event(type, obj)`` wraps one in an event.
``down = True`` makes every request answer 503; ``stop()`` refuses connections.

Webhooks are signed with Stripe's scheme (``Stripe-Signature: t=...,v1=HMAC-SHA256``) through
``stripe.WebhookSignature.generate_signature_header``: :func:`signature_header`.

Fixtures (registered by the root ``conftest.py``): ``stripe_stub`` (a started stub, emptied,
with the settings pointing billing at it: keys, webhook secret, ``STRIPE_API_BASE``) and
``stripe_webhooks`` (posts signed events to ``/stripe/webhook/`` through the test client).
By hand: ``python -m rekindle.testing.stripe_stub --port 12111``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe

SECRET_KEY = "sk_test_" + "stub0000000000000000000000000000"
WEBHOOK_SECRET = "whsec_" + "stubsigningsecret000000000000000"
ACCOUNT_ID = "acct_1StubAccount000"


def _new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) as nested dicts, lists for numeric (or empty) indices."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = [key.split("[", 1)[0]] + [p.rstrip("]") for p in key.split("[")[1:]]
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            child_is_list = not last and (parts[index + 1].isdigit() or parts[index + 1] == "")
            if isinstance(node, list):
                position = len(node) if part == "" else int(part)
                while len(node) <= position:
                    node.append(None)
                if last:
                    node[position] = value
                else:
                    if node[position] is None:
                        node[position] = [] if child_is_list else {}
                    node = node[position]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if child_is_list else {})
    return root


def signature_header(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp))


class StripeError(Exception):
    def __init__(self, status: int, kind: str, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code

    def body(self) -> dict[str, Any]:
        error = {"type": self.kind, "message": self.message}
        if self.code:
            error["code"] = self.code
        return {"error": error}

    @property
    def message(self) -> str:
        return str(self.args[0])


class StripeStub:
    """The stand-in's state and server; see the module docstring."""

    def __init__(self, *, secret_key: str = SECRET_KEY, webhook_secret: str = WEBHOOK_SECRET, port: int = 0) -> None:
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        self._port = port
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        # Prices made "in the dashboard", for STRIPE_HD_PRICE_ID: id -> (unit_amount, currency).
        self.prices: dict[str, tuple[int, str]] = {"price_hd_test": (1500, "eur")}
        self.reset()

    # --- lifecycle -----------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.objects: dict[str, dict[str, Any]] = {}
            self.idempotent: dict[str, tuple[str, int, dict[str, Any]]] = {}
            self.requests: list[tuple[str, str]] = []
            self.request_params: list[tuple[str, str, dict[str, Any]]] = []
            self.unknown_requests: list[tuple[str, str]] = []
            self.down = False
            # Seconds each Checkout Session create takes (to widen a race in a test).
            self.create_delay = 0.0

    def start(self) -> StripeStub:
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="stripe-stub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stub first"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def params_of(self, method: str, path: str) -> list[dict[str, Any]]:
        """The decoded parameters of each request made with ``method`` to ``path``."""
        return [params for m, p, params in self.request_params if m == method and p == path]

    def calls(self, method: str, prefix: str) -> list[str]:
        """The paths of the requests made so far with ``method`` whose path starts with ``prefix``."""
        return [path for m, path in self.requests if m == method and path.startswith(prefix)]

    # --- objects ---------------------------------------------------------------------

    def _put(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        return obj

    def get(self, object_id: str) -> dict[str, Any]:
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(self.objects[object_id]))
            return copy

    def _of(self, object_id: str, kind: str) -> dict[str, Any]:
        obj = self.objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise StripeError(404, "invalid_request_error", f"No such {kind}: '{object_id}'", "resource_missing")
        return obj

    # --- the API -------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, Any], idempotency_key: str) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((method, path))
            self.request_params.append((method, path, params))
            if method == "POST" and idempotency_key and idempotency_key in self.idempotent:
                known_path, status, body = self.idempotent[idempotency_key]
                if known_path == path:
                    return status, body
            try:
                status, body = 200, self._route(method, path, params)
            except StripeError as exc:
                status, body = exc.status, exc.body()
            if method == "POST" and idempotency_key:
                self.idempotent[idempotency_key] = (path, status, body)
            return status, json.loads(json.dumps(body))

    def _route(self, method: str, path: str, params: dict[str, Any]) -> Any:
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            return self._unknown(method, path)
        rest = parts[1:]
        expand = list(params.get("expand") or [])
        if rest == ["checkout", "sessions"]:
            if method == "POST":
                return self._session_create(params)
            return self._session_list(params, expand)
        if rest[:2] == ["checkout", "sessions"] and len(rest) == 3 and method == "GET":
            return self._session_view(self._of(rest[2], "checkout.session"), expand)
        if rest[:2] == ["checkout", "sessions"] and len(rest) == 4 and rest[3] == "expire" and method == "POST":
            return self._session_expire(rest[2])
        if rest == ["refunds"] and method == "POST":
            return self._refund_create(params)
        if rest == ["account"] and method == "GET":
            return self._account()
        kinds = {
            "payment_intents": "payment_intent",
            "charges": "charge",
            "payment_methods": "payment_method",
            "balance_transactions": "balance_transaction",
            "disputes": "dispute",
            "refunds": "refund",
            "customers": "customer",
        }
        if len(rest) == 2 and rest[0] in kinds and method == "GET":
            return self._expanded(self._of(rest[1], kinds[rest[0]]), expand)
        return self._unknown(method, path)

    def _unknown(self, method: str, path: str) -> Any:
        self.unknown_requests.append((method, path))
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _expanded(self, obj: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        obj = json.loads(json.dumps(obj))
        for path in expand:
            head, _, tail = path.partition(".")
            value = obj.get(head)
            if isinstance(value, str) and value in self.objects:
                obj[head] = self._expanded(self.objects[value], [tail] if tail else [])
            elif isinstance(value, dict) and tail:
                obj[head] = self._expanded(value, [tail])
        return obj

    def _account(self) -> dict[str, Any]:
        return {
            "id": ACCOUNT_ID,
            "object": "account",
            "business_profile": {"name": "Rekindle (test)", "url": None},
            "charges_enabled": True,
            "payouts_enabled": True,
            "country": "US",
            "default_currency": "usd",
            "email": "billing@rekindle.example",
            "settings": {"dashboard": {"display_name": "Rekindle"}, "branding": {}},
            "type": "standard",
            "created": 1_700_000_000,
            "metadata": {},
        }

    def _session_create(self, params: dict[str, Any]) -> dict[str, Any]:
        for name in ("mode", "success_url", "cancel_url", "line_items"):
            if not params.get(name):
                raise StripeError(400, "invalid_request_error", f"Missing required param: {name}.", "parameter_missing")
        item = params["line_items"][0]
        quantity = int(item.get("quantity") or 1)
        if "price" in item:
            if item["price"] not in self.prices:
                raise StripeError(400, "invalid_request_error", f"No such price: '{item['price']}'", "resource_missing")
            unit_amount, currency = self.prices[item["price"]]
            name = "HD video"
        else:
            data = item["price_data"]
            unit_amount, currency = int(data["unit_amount"]), data["currency"]
            name = data["product_data"]["name"]
        now = int(time.time())
        session_id = _new_id("cs")
        expires_at = int(params.get("expires_at") or now + 24 * 3600)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": unit_amount * quantity,
            "amount_total": unit_amount * quantity,
            "cancel_url": params["cancel_url"],
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": currency,
            "customer": None,
            "customer_creation": "if_required",
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": expires_at,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "mode": params["mode"],
            "payment_intent": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params["success_url"],
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "url": f"https://checkout.stripe.com/c/pay/{session_id}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
            "_line_item": {"name": name, "unit_amount": unit_amount, "quantity": quantity},
            "_payment_intent_metadata": (params.get("payment_intent_data") or {}).get("metadata") or {},
        }
        return self._session_view(self._put(session), [])

    def _session_view(self, session: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        view = {key: value for key, value in session.items() if not key.startswith("_")}
        if "line_items" in expand or any(e.startswith("line_items.") for e in expand):
            item = session["_line_item"]
            view["line_items"] = {
                "object": "list",
                "url": f"/v1/checkout/sessions/{session['id']}/line_items",
                "has_more": False,
                "data": [
                    {
                        "id": "li_" + session["id"][3:],
                        "object": "item",
                        "amount_subtotal": item["unit_amount"] * item["quantity"],
                        "amount_total": item["unit_amount"] * item["quantity"],
                        "amount_discount": 0,
                        "amount_tax": 0,
                        "currency": session["currency"],
                        "description": item["name"],
                        "discounts": [],
                        "quantity": item["quantity"],
                    }
                ],
            }
        rest = [e for e in expand if not e.startswith(("line_items", "total_details"))]
        return self._expanded(view, rest)

    def _session_list(self, params: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        created = params.get("created") or {}
        since = int(created.get("gte") or 0) if isinstance(created, dict) else 0
        limit = int(params.get("limit") or 10)
        sessions = sorted(
            (o for o in self.objects.values() if o["object"] == "checkout.session" and o["created"] >= since),
            key=lambda o: (o["created"], o["id"]),
            reverse=True,
        )
        after = params.get("starting_after")
        if after:
            ids = [s["id"] for s in sessions]
            sessions = sessions[ids.index(after) + 1 :] if after in ids else []
        page = sessions[:limit]
        inner = [e.removeprefix("data.") for e in expand if e.startswith("data.")]
        return {
            "object": "list",
            "url": "/v1/checkout/sessions",
            "has_more": len(sessions) > limit,
            "data": [self._session_view(s, inner) for s in page],
        }

    def _session_expire(self, session_id: str) -> dict[str, Any]:
        session = self._of(session_id, "checkout.session")
        if session["status"] != "open":
            raise StripeError(
                400,
                "invalid_request_error",
                f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a '
                f'status of "{session["status"]}".',
            )
        session.update(status="expired", url=None)
        return self._session_view(session, [])

    def _refund_create(self, params: dict[str, Any]) -> dict[str, Any]:
        intent = self._of(str(params.get("payment_intent") or ""), "payment_intent")
        charge = self._of(intent["latest_charge"], "charge")
        if charge["disputed"]:
            raise StripeError(
                400, "invalid_request_error", f"Charge {charge['id']} has been disputed.", "charge_disputed"
            )
        left = charge["amount"] - charge["amount_refunded"]
        amount = int(params.get("amount") or left)
        if left <= 0 or amount > left:
            raise StripeError(
                400,
                "invalid_request_error",
                f"Charge {charge['id']} has already been refunded.",
                "charge_already_refunded",
            )
        return self._refund(charge, amount, params.get("reason"), params.get("metadata") or {})

    def _refund(self, charge: dict[str, Any], amount: int, reason: Any, metadata: dict[str, Any]) -> dict[str, Any]:
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        return self._put(
            {
                "id": _new_id("re"),
                "object": "refund",
                "amount": amount,
                "balance_transaction": None,
                "charge": charge["id"],
                "created": int(time.time()),
                "currency": charge["currency"],
                "metadata": metadata,
                "payment_intent": charge["payment_intent"],
                "reason": reason,
                "status": "succeeded",
            }
        )

    # --- what the customer and Stripe do (the test's side) --------------------------------

    def pay(self, session_id: str, *, async_payment: bool = False) -> dict[str, Any]:
        """The customer pays the session: by card (paid now), or by a slow method (``settle_async`` later)."""
        with self._lock:
            session = self._of(session_id, "checkout.session")
            if session["status"] != "open":
                raise AssertionError(f"session {session_id} is {session['status']}, not open")
            now = int(time.time())
            amount, currency = session["amount_total"], session["currency"]
            method = self._put(
                {
                    "id": _new_id("pm"),
                    "object": "payment_method",
                    "type": "card",
                    "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034, "country": "US"},
                    "billing_details": {"email": session["customer_email"], "name": None, "address": None},
                    "customer": None,
                    "created": now,
                    "livemode": False,
                    "metadata": {},
                }
            )
            intent: dict[str, Any] = {
                "id": _new_id("pi"),
                "object": "payment_intent",
                "amount": amount,
                "amount_received": 0 if async_payment else amount,
                "currency": currency,
                "customer": None,
                "created": now,
                "livemode": False,
                "metadata": session["_payment_intent_metadata"],
                "payment_method": method["id"],
                "payment_method_types": ["card"],
                "status": "processing" if async_payment else "succeeded",
                "latest_charge": None,
                "description": None,
            }
            self._put(intent)
            if not async_payment:
                self._charge(intent, method)
            session.update(
                status="complete",
                payment_status="unpaid" if async_payment else "paid",
                payment_intent=intent["id"],
                url=None,
                customer_details={"email": session["customer_email"], "name": None, "address": None},
            )
            return self._session_view(session, [])

    def settle_async(self, session_id: str, *, succeeded: bool = True) -> dict[str, Any]:
        """The slow payment of a completed session goes through (or fails)."""
        with self._lock:
            session = self._of(session_id, "checkout.session")
            intent = self._of(session["payment_intent"], "payment_intent")
            if succeeded:
                intent.update(status="succeeded", amount_received=intent["amount"])
                self._charge(intent, self.objects[intent["payment_method"]])
                session["payment_status"] = "paid"
            else:
                intent["status"] = "requires_payment_method"
            return self._session_view(session, [])

    def _charge(self, intent: dict[str, Any], method: dict[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        charge_id = _new_id("ch")
        fee = round(intent["amount"] * 0.029) + 30
        txn = self._put(
            {
                "id": _new_id("txn"),
                "object": "balance_transaction",
                "amount": intent["amount"],
                "available_on": now + 2 * 86400,
                "created": now,
                "currency": intent["currency"],
                "description": None,
                "exchange_rate": None,
                "fee": fee,
                "fee_details": [
                    {
                        "amount": fee,
                        "currency": intent["currency"],
                        "description": "Stripe processing fees",
                        "type": "stripe_fee",
                    }
                ],
                "net": intent["amount"] - fee,
                "reporting_category": "charge",
                "source": charge_id,
                "status": "pending",
                "type": "charge",
            }
        )
        charge = self._put(
            {
                "id": charge_id,
                "object": "charge",
                "amount": intent["amount"],
                "amount_captured": intent["amount"],
                "amount_refunded": 0,
                "balance_transaction": txn["id"],
                "billing_details": method["billing_details"],
                "captured": True,
                "created": now,
                "currency": intent["currency"],
                "customer": None,
                "description": None,
                "disputed": False,
                "failure_code": None,
                "failure_message": None,
                "livemode": False,
                "metadata": {},
                "outcome": {
                    "network_status": "approved_by_network",
                    "risk_level": "normal",
                    "seller_message": "Payment complete.",
                    "type": "authorized",
                },
                "paid": True,
                "payment_intent": intent["id"],
                "payment_method": method["id"],
                "payment_method_details": {"type": "card", "card": method["card"]},
                "receipt_email": None,
                "refunded": False,
                "status": "succeeded",
            }
        )
        intent["latest_charge"] = charge_id
        return charge

    def charge_of(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            intent = self._of(self._of(session_id, "checkout.session")["payment_intent"], "payment_intent")
            return self.get(intent["latest_charge"])

    def expire(self, session_id: str) -> dict[str, Any]:
        """Stripe expires an open session (its time ran out)."""
        with self._lock:
            return self._session_expire(session_id)

    def refund(self, session_id: str, amount: int | None = None) -> dict[str, Any]:
        """Someone refunds (from Stripe's dashboard, say) all or part of a session's payment; the charge after it."""
        with self._lock:
            charge = self._of(self.charge_of(session_id)["id"], "charge")
            self._refund(charge, amount or charge["amount"] - charge["amount_refunded"], "requested_by_customer", {})
            return self.get(charge["id"])

    def dispute(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            charge = self._of(self.charge_of(session_id)["id"], "charge")
            charge["disputed"] = True
            return self._put(
                {
                    "id": _new_id("dp"),
                    "object": "dispute",
                    "amount": charge["amount"],
                    "balance_transactions": [],
                    "charge": charge["id"],
                    "created": int(time.time()),
                    "currency": charge["currency"],
                    "evidence": {},
                    "evidence_details": {
                        "due_by": int(time.time()) + 7 * 86400,
                        "has_evidence": False,
                        "past_due": False,
                        "submission_count": 0,
                    },
                    "is_charge_refundable": False,
                    "livemode": False,
                    "metadata": {},
                    "payment_intent": charge["payment_intent"],
                    "reason": "fraudulent",
                    "status": "needs_response",
                }
            )

    def close_dispute(self, dispute_id: str, *, status: str) -> dict[str, Any]:
        with self._lock:
            dispute = self._of(dispute_id, "dispute")
            dispute["status"] = status
            return self.get(dispute_id)

    def event(self, event_type: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
        """A Stripe event about ``obj`` (as :meth:`pay` and the others return it)."""
        return {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": stripe.api_version,
            "created": created if created is not None else int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }


class _Handler(BaseHTTPRequestHandler):
    owner: StripeStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_" + secrets.token_hex(7))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        split = urlsplit(self.path)
        stub = self.owner
        if stub.down:
            self._answer(503, {"error": {"type": "api_error", "message": "The stub is down (stub.down = True)."}})
            return
        if self.headers.get("Authorization") != f"Bearer {stub.secret_key}":
            self._answer(401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided."}})
            return
        params = decode_form(parse_qsl(split.query, keep_blank_values=True) + parse_qsl(raw, keep_blank_values=True))
        if method == "POST" and split.path == "/v1/checkout/sessions" and stub.create_delay:
            time.sleep(stub.create_delay)
        status, body = stub.handle(method, split.path, params, self.headers.get("Idempotency-Key") or "")
        self._answer(status, body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


# --- pytest fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stripe_stub_server() -> Iterator[StripeStub]:
    stub = StripeStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def stripe_stub(stripe_stub_server: StripeStub, settings: Any) -> Iterator[StripeStub]:
    """The stub, emptied, with billing's settings pointing at it (retries off: a down stub answers at once)."""
    stripe_stub_server.reset()
    settings.STRIPE_SECRET_KEY = stripe_stub_server.secret_key
    settings.STRIPE_WEBHOOK_SECRET = stripe_stub_server.webhook_secret
    settings.STRIPE_API_BASE = stripe_stub_server.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.STRIPE_HD_PRICE_ID = ""
    settings.STRIPE_HD_AMOUNT = 900
    settings.STRIPE_HD_CURRENCY = "usd"
    yield stripe_stub_server
    stripe_stub_server.reset()


class WebhookSender:
    """Posts events to Stripe's webhook endpoint over HTTP (the Django test client), signed as Stripe signs them."""

    PATH = "/stripe/webhook/"

    def __init__(self, stub: StripeStub) -> None:
        from django.test import Client

        self.stub = stub
        self.client = Client()
        self._endpoint_ready = False

    def _ensure_endpoint(self) -> None:
        if not self._endpoint_ready:
            from billing.services import webhook_endpoint_sync

            webhook_endpoint_sync()
            self._endpoint_ready = True

    def post(self, payload: str, *, signature: str | None) -> Any:
        self._ensure_endpoint()
        headers = {"Stripe-Signature": signature} if signature is not None else {}
        return self.client.post(self.PATH, data=payload, content_type="application/json", headers=headers)

    def send(self, event: dict[str, Any], *, timestamp: int | None = None, secret: str | None = None) -> Any:
        payload = json.dumps(event)
        header = signature_header(payload, secret=secret or self.stub.webhook_secret, timestamp=timestamp)
        return self.post(payload, signature=header)

    def deliver(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Make the event, send it, and insist it was taken (200); the event, to send again."""
        event = self.stub.event(event_type, obj)
        response = self.send(event)
        assert response.status_code == 200, response.content[:500]
        return event


@pytest.fixture
def stripe_webhooks(stripe_stub: StripeStub) -> WebhookSender:
    return WebhookSender(stripe_stub)


def main() -> None:
    parser = argparse.ArgumentParser(description="A stand-in for Stripe's HTTP API (tests and benchmarks).")
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args()
    stub = StripeStub(port=args.port).start()
    print(f"Stripe stub on {stub.url}, key {stub.secret_key}, webhook secret {stub.webhook_secret}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
