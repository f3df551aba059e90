#!/usr/bin/env python3
"""Writes samples.jsonl: golden samples of the campus-delivery module (the
`notification-host normalize` format). Run it again after editing."""
import json

S = "11111111-2222-4333-8444-555555555555"
ALL = ["customer_id", "runner_id", "order_id", "event_type", "correlation_id", "source_service", "status"]
out = []

def sample(topic, value, **expected):
    out.append({"topic": topic, "value_text": json.dumps(value), "expected": {f: expected.get(f) for f in ALL}})

def env(type_, payload, source=None, corr=S):
    e = {"type": type_}
    if corr is not None:
        e["correlation_id"] = corr
    e["timestamp"] = "2025-04-04T10:00:00.123456"
    if source:
        e["source"] = source
    e["payload"] = payload
    return e

# authorize_payment: the customer is payload.customer.clerkUserId
sample("payment_commands", env("authorize_payment", {"order_id": 42, "customer": {"clerkUserId": "user_2abc", "stripeCustomerId": "cus_1", "userStripeCard": {"payment_method_id": "pm_1"}}, "order": {"amount": 1250, "description": "Order 42"}, "return_url": "https://example.test/r"}),
       customer_id="user_2abc", order_id="42", event_type="authorize_payment", correlation_id=S)
# user_commands: user_id is the customer
sample("user_commands", env("get_payment_info", {"user_id": "user_2abc"}),
       customer_id="user_2abc", event_type="get_payment_info", correlation_id=S)
# ...but not on other topics
sample("user_events", env("user.payment_info_failed", {"user_id": "user_2abc", "error": "x"}, source="user-service"),
       event_type="user.payment_info_failed", correlation_id=S, source_service="user-service")
# saga_id as the correlation id when the envelope has none
sample("order_events", env("order.created", {"order_id": 42, "customer_id": "user_2abc", "status": "PENDING", "saga_id": "saga-77"}, source="order-service", corr=None),
       order_id="42", customer_id="user_2abc", status="PENDING", event_type="order.created", correlation_id="saga-77", source_service="order-service")
# the envelope's correlation id wins over saga_id
sample("order_events", env("order.created", {"order_id": 42, "customer_id": "user_2abc", "status": "PENDING", "saga_id": "saga-77"}, source="order-service"),
       order_id="42", customer_id="user_2abc", status="PENDING", event_type="order.created", correlation_id=S, source_service="order-service")
# ORDER_* events: the stringified snapshot fills what the payload lacks
snap = {"orderId": 42, "customerId": "user_2abc", "runnerId": "user_runner9", "status": "ACCEPTED",
        "orderDescription": json.dumps({"foodItems": [{"item_name": "Tea", "quantity": 1}]})}
hc = "order-20250404100000-1a2b3c4d"
sample("order-events", env("ORDER_ACCEPTED", {"customerId": "user_2abc", "runnerId": None, "orderId": None, "status": None, "event": json.dumps(snap)}, source="order-service", corr=hc),
       customer_id="user_2abc", runner_id="user_runner9", order_id="42", status="ACCEPTED", event_type="ORDER_ACCEPTED", correlation_id=hc, source_service="order-service")
sample("order-events", env("ORDER_COMPLETED", {"customerId": "user_2abc", "runnerId": "user_runner9", "orderId": 42, "status": "COMPLETED", "event": json.dumps(dict(snap, status="COMPLETED"))}, source="order-service", corr=hc),
       customer_id="user_2abc", runner_id="user_runner9", order_id="42", status="COMPLETED", event_type="ORDER_COMPLETED", correlation_id=hc, source_service="order-service")
sample("order-events", env("ORDER_CREATED", {"event": json.dumps({"orderId": 43, "customerId": "user_2xyz", "runnerId": None, "status": "PENDING"})}, source="order-service", corr=hc),
       customer_id="user_2xyz", order_id="43", status="PENDING", event_type="ORDER_CREATED", correlation_id=hc, source_service="order-service")
# default behaviour elsewhere
sample("payment_events", env("payment.released", {"payment_id": "pi_1", "runner_id": "user_runner9", "amount": 10.5, "status": "SUCCEEDED", "transfer_id": None}, source="payment-service"),
       runner_id="user_runner9", status="SUCCEEDED", event_type="payment.released", correlation_id=S, source_service="payment-service")
out.append({"topic": "order_events", "value_text": "not json", "expected": {f: None for f in ALL}})

with open("samples.jsonl", "w") as f:
    for line in out:
        f.write(json.dumps(line) + "\n")
print(len(out), "samples")
