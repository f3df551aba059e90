#!/usr/bin/env python3
"""Writes default.jsonl: the golden samples of the built-in default rules.

Each line is a sample record in the format of `notification-host normalize`
with the fields the default rules must find. Values are produced the way the
platform's producers produce them (Python's json.dumps: ASCII escapes, ", " and
": " separators). Run it again after editing; the output is committed.
"""
import base64, json

S = "11111111-2222-4333-8444-555555555555"   # a saga id
ALL = ["customer_id", "runner_id", "order_id", "event_type", "correlation_id", "source_service", "status"]
out = []

def sample(topic, value=None, *, text=None, b64=None, tombstone=False, key=None, headers=None, **expected):
    line = {"topic": topic}
    if key is not None: line["key"] = key
    if headers is not None: line["headers"] = headers
    if tombstone: pass
    elif b64 is not None: line["value_b64"] = base64.b64encode(b64).decode()
    elif text is not None: line["value_text"] = text
    else: line["value_text"] = json.dumps(value)
    line["expected"] = {f: expected.get(f) for f in ALL}
    out.append(line)

def env(type_, payload, *, source=None, corr=S, ts="2025-04-04T10:00:00.123456"):
    e = {"type": type_, "correlation_id": corr, "timestamp": ts}
    if source: e["source"] = source
    e["payload"] = payload
    return e

# --- order_commands (create-order saga commands: no source) ---
sample("order_commands", env("create_order", {"customer_id": "user_2abc", "order_details": {"foodItems": [{"item_name": "Coffee", "quantity": 2, "price": 3.5}], "storeLocation": "Library", "deliveryLocation": "Dorm 4", "foodFee": 7.0, "deliveryFee": 2.5}, "saga_id": S}),
       customer_id="user_2abc", event_type="create_order", correlation_id=S)
sample("order_commands", env("update_order_status", {"order_id": 42, "status": "ACCEPTED"}),
       order_id="42", event_type="update_order_status", correlation_id=S, status="ACCEPTED")
sample("order_commands", env("cancel_order", {"order_id": 42, "reason": "customer request"}),
       order_id="42", event_type="cancel_order", correlation_id=S)
# --- user_commands: user_id is not a customer id for the default rules ---
sample("user_commands", env("get_payment_info", {"user_id": "user_2abc"}),
       event_type="get_payment_info", correlation_id=S)
# --- payment_commands ---
sample("payment_commands", env("authorize_payment", {"order_id": 42, "customer": {"clerkUserId": "user_2abc", "stripeCustomerId": "cus_1", "userStripeCard": {"payment_method_id": "pm_1"}}, "order": {"amount": 1250, "description": "Order 42"}, "return_url": "https://example.test/r"}),
       order_id="42", event_type="authorize_payment", correlation_id=S)
sample("payment_commands", env("revert_payment", {"payment_id": "pi_1", "reason": "cancelled"}),
       event_type="revert_payment", correlation_id=S)
sample("payment_commands", env("release_payment", {"payment_id": "pi_1", "runner_id": "user_runner9", "runner_connect_account_id": "acct_1"}),
       runner_id="user_runner9", event_type="release_payment", correlation_id=S)
# --- order_events from Kafka handlers ---
sample("order_events", env("order.created", {"order_id": 42, "customer_id": "user_2abc", "status": "PENDING", "saga_id": S}, source="order-service"),
       order_id="42", customer_id="user_2abc", status="PENDING", event_type="order.created", correlation_id=S, source_service="order-service")
sample("order_events", env("order.status_updated", {"order_id": 42, "status": "ACCEPTED", "saga_id": S}, source="order-service"),
       order_id="42", status="ACCEPTED", event_type="order.status_updated", correlation_id=S, source_service="order-service")
sample("order_events", env("order.status_update_failed", {"order_id": 42, "error": "Order not found"}, source="order-service"),
       order_id="42", event_type="order.status_update_failed", correlation_id=S, source_service="order-service")
sample("order_events", env("order.cancelled", {"order_id": 42, "reason": "payment failed"}, source="order-service"),
       order_id="42", event_type="order.cancelled", correlation_id=S, source_service="order-service")
# --- order_events from HTTP routes: camelCase payload, stringified snapshot ---
snapshot = {"orderId": 42, "customerId": "user_2abc", "runnerId": None, "status": "PENDING",
            "orderDescription": json.dumps({"foodItems": [{"item_name": "Tea", "quantity": 1}]}), "createdAt": "2025-04-04T10:00:00"}
http_corr = "order-20250404100000-1a2b3c4d"
for t, runner, status in [("ORDER_CREATED", None, "PENDING"), ("ORDER_UPDATED", None, "PENDING"),
                          ("ORDER_ACCEPTED", "user_runner9", "ACCEPTED"), ("ORDER_CANCELLED", None, "CANCELLED"),
                          ("ORDER_ACCEPTANCE_CANCELLED", None, "PENDING"), ("ORDER_RUNNER_CLEARED", None, "PENDING"),
                          ("ORDER_COMPLETED", "user_runner9", "COMPLETED")]:
    snap = dict(snapshot, runnerId=runner, status=status)
    sample("order-events", env(t, {"customerId": "user_2abc", "runnerId": runner, "orderId": 42, "status": status, "event": json.dumps(snap)}, source="order-service", corr=http_corr),
           customer_id="user_2abc", runner_id=runner, order_id="42", status=status, event_type=t, correlation_id=http_corr, source_service="order-service")
# --- payment_events ---
sample("payment_events", env("payment.authorized", {"payment_id": "pi_1", "order_id": 42, "payment_intent_id": "pi_1", "status": "requires_capture"}, source="payment-service"),
       order_id="42", status="requires_capture", event_type="payment.authorized", correlation_id=S, source_service="payment-service")
sample("payment_events", env("payment.failed", {"error": "card_declined", "message": "Your card was declined.", "stripe_status": "requires_payment_method", "stripe_code": "card_declined"}, source="payment-service"),
       event_type="payment.failed", correlation_id=S, source_service="payment-service")
sample("payment_events", env("payment.failed", {"error": "x", "message": "y", "payment_id": "pi_2", "order_id": 43}, source="payment-service"),
       order_id="43", event_type="payment.failed", correlation_id=S, source_service="payment-service")
sample("payment_events", env("payment.released", {"payment_id": "pi_1", "status": "REVERTED", "message": "Payment reverted"}, source="payment-service"),
       status="REVERTED", event_type="payment.released", correlation_id=S, source_service="payment-service")
sample("payment_events", env("payment.released", {"payment_id": "pi_1", "runner_id": "user_runner9", "amount": 10.5, "status": "SUCCEEDED", "transfer_id": None}, source="payment-service"),
       runner_id="user_runner9", status="SUCCEEDED", event_type="payment.released", correlation_id=S, source_service="payment-service")
# --- payment-api commands and user-service events (+00:00 timestamps) ---
sample("payment_commands", env("authorize_payment", {"order_id": "42", "customer": {"clerkUserId": "user_2abc"}, "order": {"amount": 1250, "description": "d"}, "return_url": "r"}, source="payment-api", corr="9f0c4a52-6a1e-4c55-9c41-3f7a0e1b2c3d", ts="2025-04-04T10:00:00.123456+00:00"),
       order_id="42", event_type="authorize_payment", correlation_id="9f0c4a52-6a1e-4c55-9c41-3f7a0e1b2c3d", source_service="payment-api")
sample("user_events", env("user.payment_info_retrieved", {"payment_info": {"stripeCustomerId": "cus_1", "paymentMethodId": "pm_1"}}, source="user-service", ts="2025-04-04T10:00:01+00:00"),
       event_type="user.payment_info_retrieved", correlation_id=S, source_service="user-service")
sample("user_events", env("user.payment_info_failed", {"error": "User not found"}, source="user-service"),
       event_type="user.payment_info_failed", correlation_id=S, source_service="user-service")
# --- other conventions in the company ---
sample("escrow-events", {"specversion": "1.0", "type": "escrow.held", "source": "escrow-service", "id": "e1", "correlationId": "c-77", "data": {"orderId": "o-9", "customerId": "c-1", "status": "HELD"}},
       order_id="o-9", customer_id="c-1", status="HELD", event_type="escrow.held", correlation_id="c-77", source_service="escrow-service")
sample("scheduler-events", {"eventType": "timer.fired", "correlationId": "c-78", "sourceService": "scheduler", "orderId": "o-10", "runnerId": "r-2"},
       order_id="o-10", runner_id="r-2", event_type="timer.fired", correlation_id="c-78", source_service="scheduler")
sample("notification-events", {"order_id": "o-11", "customer_id": "c-3", "status": "SENT"},
       order_id="o-11", customer_id="c-3", status="SENT")
sample("saga-events", {"event_type": "saga.completed", "correlation_id": "c-79", "source_service": "saga-orchestrator", "data": json.dumps({"order_id": "o-12"})},
       order_id="o-12", event_type="saga.completed", correlation_id="c-79", source_service="saga-orchestrator")
# --- payload shapes the old service dropped ---
sample("order_events", {"type": "order.x", "payload": None, "order_id": "top"}, event_type="order.x", order_id="top")
sample("order_events", {"type": "order.x", "payload": [{"order_id": "in-list"}], "order_id": "top"}, event_type="order.x", order_id="top")
sample("order_events", {"type": "order.x", "payload": "plain text", "order_id": "top"}, event_type="order.x", order_id="top")
sample("order_events", {"type": "order.x", "payload": json.dumps({"order_id": "in-string"})}, event_type="order.x", order_id="in-string")
# --- edge cases of the rules ---
sample("edge", text="not json at all")
sample("edge", text="{\"order_id\": \"truncated")
sample("edge", b64=b'{"order_id": "o\xff\xfe-1", "customer_id": "c-\xc3\xa9"}', order_id="o\ufffd\ufffd-1", customer_id="c-\u00e9")
sample("edge", b64=b'\xef\xbb\xbf{"order_id": "bom"}', order_id="bom")
sample("edge", tombstone=True)
sample("edge", text="")
sample("edge", text="  \n\t ")
sample("edge", [{"order_id": "a"}, {"order_id": "b"}])
sample("edge", text="42")
sample("edge", text="true")
sample("edge", text="null")
sample("edge", text=json.dumps("just a string"))
sample("edge", text=json.dumps(json.dumps({"order_id": "double", "type": "t.double"})), order_id="double", event_type="t.double")
sample("edge", text=json.dumps(json.dumps(json.dumps({"order_id": "triple"}))))
sample("edge", text='{"order_id": 12345, "customer_id": 123456789012345678901234567890, "runner_id": -7}', order_id="12345", customer_id="123456789012345678901234567890", runner_id="-7")
sample("edge", {"order_id": 1.5, "customer_id": True, "runner_id": {"id": 1}, "status": [1], "type": 3.0, "correlation_id": False})
sample("edge", {"order_id": "None", "customer_id": "null", "runner_id": "", "status": None})
sample("edge", {"payload": {"order_id": "snake", "orderId": "camel"}}, order_id="snake")
sample("edge", {"payload": {"orderId": "camel"}, "order_id": "top"}, order_id="camel")
sample("edge", {"payload": {"customerId": None}, "data": {"customer_id": "from-data"}, "customer_id": "top"}, customer_id="from-data")
sample("edge", {"type": "", "event_type": "second", "eventType": "third"}, event_type="second")
sample("edge", {"correlation_id": None, "correlationId": "camel-corr", "source": "None", "sourceService": "svc"}, correlation_id="camel-corr", source_service="svc")
sample("edge", {"order_id": "  spaced  ", "status": "MiXeD", "type": "caf\u00e9 \u2615 \U0001F680"}, order_id="  spaced  ", status="MiXeD", event_type="caf\u00e9 \u2615 \U0001F680")
sample("edge", text='{"order_id": "first", "order_id": "last"}', order_id="last")
sample("edge", {"order_id": "x" * 300, "customer_id": "\u00fc" * 10}, order_id="x" * 300, customer_id="\u00fc" * 10)
sample("edge", text='{"order_id": "nul\\u0000inside", "type": "t"}', order_id="nul\u0000inside", event_type="t")
sample("edge", key="order-42", headers={"producer": "payment-service", "trace": None}, value={"order_id": "with-key"}, order_id="with-key")
# Placeholders are not values: an id of "unknown" names no order, and the
# search goes on to the next key and container.
sample("edge", env("order.status_updated", {"order_id": "unknown", "customer_id": "N/A", "status": "unavailable"}, corr="undefined", source="-"), event_type="order.status_updated")
sample("edge", {"payload": {"order_id": 0, "runnerId": "r-9"}, "data": {"order_id": "o-real"}, "type": "  NULL "}, order_id="o-real", runner_id="r-9")
sample("edge", {"order_id": "0042", "customer_id": "-1", "type": "none-such"}, order_id="0042", customer_id="-1", event_type="none-such")

with open("default.jsonl", "w") as f:
    for line in out:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
print(f"{len(out)} samples")
