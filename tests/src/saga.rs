//! The demo order saga: one realistic create-order saga as the delivery
//! platform's services publish it (commands and events on mixed topic
//! names, snake_case envelopes, camelCase HTTP-route events with a
//! stringified order snapshot, and events tied to the order only by the
//! saga id). `saga-demo` publishes it; the console tests and screenshots
//! read it back.

use serde_json::json;

use crate::Out;

/// The topics the saga uses.
pub const TOPICS: [&str; 7] = [
    "order_commands",
    "order_events",
    "order-events",
    "payment_commands",
    "payment_events",
    "user_commands",
    "user_events",
];

/// The saga (correlation) id of the order's create-order saga.
pub fn saga_id(order_id: u64) -> String {
    format!("5f1e0c2a-9b7d-4c1e-8a3f-{order_id:012}")
}

/// The correlation id of the order's HTTP-route events.
pub fn http_correlation_id(order_id: u64) -> String {
    format!("order-20250404100000-{order_id:08x}")
}

/// The event types in the order they are published (one second apart in
/// record time, from 2025-04-04T10:00:00Z).
pub const EVENT_TYPES: [&str; 12] = [
    "create_order",
    "order.created",
    "get_payment_info",
    "user.payment_info_retrieved",
    "authorize_payment",
    "payment.authorized",
    "update_order_status",
    "order.status_updated",
    "ORDER_ACCEPTED",
    "ORDER_COMPLETED",
    "release_payment",
    "payment.released",
];

/// The saga's records, each topic name prefixed with `topic_prefix`.
pub fn records(order_id: u64, topic_prefix: &str) -> Vec<Out> {
    let base_ms = chrono::DateTime::parse_from_rfc3339("2025-04-04T10:00:00Z").map_or(0, |t| t.timestamp_millis());
    records_at(order_id, topic_prefix, base_ms)
}

/// [`records`] with record times from `base_ms` on, a second apart.
pub fn records_at(order_id: u64, topic_prefix: &str, base_ms: i64) -> Vec<Out> {
    let saga = saga_id(order_id);
    let http_corr = http_correlation_id(order_id);
    let customer = "user_2demoCustomer";
    let runner = "user_2demoRunner";
    let snapshot = |status: &str, runner_id: Option<&str>| {
        json!({"orderId": order_id, "customerId": customer, "runnerId": runner_id, "status": status,
               "orderDescription": json!({"foodItems": [{"item_name": "Iced latte", "quantity": 2, "price": 4.5}]}).to_string(),
               "storeLocation": "Student Union", "deliveryLocation": "Dorm 7"})
        .to_string()
    };
    let envelope = |kind: &str, corr: &str, source: Option<&str>, ts: &str, payload: serde_json::Value| {
        let mut e = json!({"type": kind, "correlation_id": corr, "timestamp": ts});
        if let Some(s) = source {
            e["source"] = json!(s);
        }
        e["payload"] = payload;
        e
    };
    let events = vec![
        (
            "order_commands",
            envelope(
                "create_order",
                &saga,
                None,
                "2025-04-04T10:00:00.000001",
                json!({"customer_id": customer, "order_details": {"foodItems": [{"item_name": "Iced latte", "quantity": 2, "price": 4.5}],
                   "storeLocation": "Student Union", "deliveryLocation": "Dorm 7", "foodFee": 9.0, "deliveryFee": 2.5}, "saga_id": saga}),
            ),
        ),
        (
            "order_events",
            envelope(
                "order.created",
                &saga,
                Some("order-service"),
                "2025-04-04T10:00:00.200000",
                json!({"order_id": order_id, "customer_id": customer, "status": "PENDING", "saga_id": saga}),
            ),
        ),
        (
            "user_commands",
            envelope("get_payment_info", &saga, None, "2025-04-04T10:00:00.300000", json!({"user_id": customer})),
        ),
        (
            "user_events",
            envelope(
                "user.payment_info_retrieved",
                &saga,
                Some("user-service"),
                "2025-04-04T10:00:00.400000+00:00",
                json!({"payment_info": {"stripeCustomerId": "cus_demo", "paymentMethodId": "pm_demo"}}),
            ),
        ),
        (
            "payment_commands",
            envelope(
                "authorize_payment",
                &saga,
                None,
                "2025-04-04T10:00:00.500000",
                json!({"order_id": order_id, "customer": {"clerkUserId": customer, "stripeCustomerId": "cus_demo",
                   "userStripeCard": {"payment_method_id": "pm_demo"}}, "order": {"amount": 1150, "description": format!("Order {order_id}")},
                   "return_url": "https://example.test/return"}),
            ),
        ),
        (
            "payment_events",
            envelope(
                "payment.authorized",
                &saga,
                Some("payment-service"),
                "2025-04-04T10:00:01.000000",
                json!({"payment_id": "pi_demo", "order_id": order_id, "payment_intent_id": "pi_demo", "status": "requires_capture"}),
            ),
        ),
        (
            "order_commands",
            envelope(
                "update_order_status",
                &saga,
                None,
                "2025-04-04T10:00:01.100000",
                json!({"order_id": order_id, "status": "CONFIRMED"}),
            ),
        ),
        (
            "order_events",
            envelope(
                "order.status_updated",
                &saga,
                Some("order-service"),
                "2025-04-04T10:00:01.200000",
                json!({"order_id": order_id, "status": "CONFIRMED", "saga_id": saga}),
            ),
        ),
        (
            "order-events",
            envelope(
                "ORDER_ACCEPTED",
                &http_corr,
                Some("order-service"),
                "2025-04-04T10:05:00.000000",
                json!({"customerId": customer, "runnerId": runner, "orderId": order_id, "status": "ACCEPTED", "event": snapshot("ACCEPTED", Some(runner))}),
            ),
        ),
        (
            "order-events",
            envelope(
                "ORDER_COMPLETED",
                &http_corr,
                Some("order-service"),
                "2025-04-04T10:30:00.000000",
                json!({"customerId": customer, "runnerId": runner, "orderId": order_id, "status": "COMPLETED", "event": snapshot("COMPLETED", Some(runner))}),
            ),
        ),
        (
            "payment_commands",
            envelope(
                "release_payment",
                &saga,
                None,
                "2025-04-04T10:30:01.000000",
                json!({"payment_id": "pi_demo", "runner_id": runner, "runner_connect_account_id": "acct_demo"}),
            ),
        ),
        (
            "payment_events",
            envelope(
                "payment.released",
                &saga,
                Some("payment-service"),
                "2025-04-04T10:30:02.000000",
                json!({"payment_id": "pi_demo", "runner_id": runner, "amount": 11.5, "status": "SUCCEEDED", "transfer_id": "tr_demo"}),
            ),
        ),
    ];

    events
        .iter()
        .enumerate()
        .map(|(i, (topic, value))| Out {
            timestamp: Some(base_ms + i as i64 * 1000),
            // Python's json.dumps separators, as the platform's producers write.
            ..Out::new(&format!("{topic_prefix}{topic}"), python_json(value))
        })
        .collect()
}

/// Serializes with `", "` and `": "` separators, like Python's json.dumps.
pub fn python_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", serde_json::Value::String(k.clone()), python_json(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        serde_json::Value::Array(items) => {
            format!("[{}]", items.iter().map(python_json).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}
