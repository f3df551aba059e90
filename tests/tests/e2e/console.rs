//! The console in a real browser: Debian's Chromium, driven through
//! ChromeDriver, against the real host binary, broker and PostgreSQL. An
//! engineer finds the demo saga's order, reads its events in order, follows
//! a correlated event to its record and sees a new record arrive in the
//! live tail; hostile values in every field render as inert text (no
//! dialog, no request anywhere but the host, no policy violation); the read
//! token guards the console; streams show every replica's writes and end
//! at shutdown; a demo saga stopped halfway shows under "Stuck now", with
//! its type's learned graph.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use notification_e2e::browser::Browser;
use notification_e2e::*;

/// Waits until the host's `/metrics` sum for `name` reaches `at_least`.
fn wait_metric(host: &Host, name: &str, at_least: f64, timeout: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let v = host.metric(name).expect("the host answers /metrics");
        if v >= at_least || started.elapsed() > timeout {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn start_with_saga(prefix: &str, env: Vec<(String, String)>) -> (Host, sqlx::PgPool) {
    let (db_url, pool) = fresh_database("console").await;
    let kafka = Kafka::shared();
    let topics: Vec<String> = saga::TOPICS.iter().map(|t| format!("{prefix}{t}")).collect();
    kafka.create_topics(&topics, 3).await;
    let mut options = HostOptions::new(&db_url, prefix);
    options.env = env;
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let producer = kafka.producer();
    for out in saga::records(4242, prefix) {
        produce(&producer, &out).await;
    }
    let rows = wait_for_rows(&pool, prefix, saga::EVENT_TYPES.len(), Duration::from_secs(30)).await;
    assert_eq!(rows.len(), saga::EVENT_TYPES.len(), "the saga is stored; log:\n{}", host.log_text());
    (host, pool)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engineer_follows_the_demo_saga_in_a_browser() {
    let prefix = unique("ui");
    let (host, _pool) = start_with_saga(&prefix, vec![]).await;
    let base = format!("http://{}", host.http);
    let browser = Browser::start().await;
    let c = &browser.client;

    // From the landing page, the order id goes to the order's page.
    c.goto(&format!("{base}/ui")).await.unwrap();
    assert!(
        browser.eval("return document.body.innerText.includes('4242')").await.as_bool().unwrap(),
        "recent orders list 4242"
    );
    c.find(Locator::Css("main input[name=q]")).await.unwrap().send_keys("4242").await.unwrap();
    c.find(Locator::Css("main form button")).await.unwrap().click().await.unwrap();
    browser.wait_for("the order page", "return location.pathname === '/ui/order/4242'", Duration::from_secs(10)).await;

    // Its events, oldest first: the ones naming the order and the ones
    // sharing its sagas, across four lanes.
    let types = browser
        .eval("return [...document.querySelectorAll('#timeline tbody tr[data-type]')].map(r => r.dataset.type)")
        .await;
    let types: Vec<String> = serde_json::from_value(types).unwrap();
    assert_eq!(types, saga::EVENT_TYPES, "the saga's events in record-time order");
    let lanes = browser
        .eval("return [...document.querySelectorAll('#timeline thead th')].slice(1).map(t => t.innerText)")
        .await;
    let lanes: Vec<String> = serde_json::from_value(lanes).unwrap();
    assert_eq!(lanes.len(), 4, "{lanes:?}");
    assert!(
        lanes[0].starts_with("(no service)") && lanes.iter().any(|l| l.starts_with("payment-service")),
        "{lanes:?}"
    );
    let stopped = browser.eval("return document.getElementById('stopped').innerText").await;
    let stopped = stopped.as_str().unwrap();
    assert!(
        stopped.starts_with("Stopped at payment.released from payment-service") && stopped.contains(" ago"),
        "{stopped}"
    );

    // A correlated event (it names no order) leads to its record.
    c.find(Locator::Css("tr[data-type='user.payment_info_retrieved'] a.type")).await.unwrap().click().await.unwrap();
    browser
        .wait_for("the record page", "return location.pathname.startsWith('/ui/record/')", Duration::from_secs(10))
        .await;
    let text = browser.eval("return document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(text.contains(&format!("{prefix}user_events")), "{text}");
    assert!(text.contains("\"stripeCustomerId\": \"cus_demo\""), "the document, laid out: {text}");
    assert!(text.contains(&saga::saga_id(4242)), "{text}");
    // The same record over the API.
    let api = browser.eval("return document.querySelector('a[href^=\"/notifications/\"]').getAttribute('href')").await;
    let (status, body) = http_get(host.http, api.as_str().unwrap()).unwrap();
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["eventType"], "user.payment_info_retrieved");
    assert_eq!(body["correlationId"], saga::saga_id(4242));

    // The live tail shows a record produced after the page loaded.
    browser.open_live_tail(&format!("{base}/ui/live")).await;
    let out = Out::new(
        &format!("{prefix}order_events"),
        r#"{"type": "order.status_updated", "source": "order-service", "payload": {"order_id": "live-4243", "status": "PICKED_UP"}}"#,
    );
    let produced = Instant::now();
    produce(&Kafka::shared().producer(), &out).await;
    let shown = browser
        .wait_for(
            "the new record in the live tail",
            "return [...document.querySelectorAll('#tail tbody tr')].some(r => r.innerText.includes('live-4243'))",
            Duration::from_secs(2),
        )
        .await;
    println!("live tail: shown {:?} after produce ({shown:?} of waiting in the page)", produced.elapsed());

    assert_eq!(browser.open_dialog().await, None);
    assert_eq!(host.metric("notification_console_csp_violations_total"), Some(0.0), "no page broke its policy");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saga_stopped_halfway_shows_under_stuck_now_in_a_browser() {
    let prefix = unique("stuck");
    let (db_url, pool) = fresh_database("stuck").await;
    let kafka = Kafka::shared();
    let topics: Vec<String> = saga::TOPICS.iter().map(|t| format!("{prefix}{t}")).collect();
    kafka.create_topics(&topics, 3).await;
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env = vec![("SAGA_MIN_SAMPLES".into(), "3".into())];
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    // Ten whole demo sagas, then one stopped after its sixth event, dated
    // the last seconds (as `saga-demo` does).
    let producer = kafka.producer();
    let base = || chrono::Utc::now().timestamp_millis() - 13_000;
    for order in 1..=10 {
        for out in saga::records_at(order, &prefix, base()) {
            produce(&producer, &out).await;
        }
    }
    for out in saga::records_at(11, &prefix, base()).into_iter().take(6) {
        produce(&producer, &out).await;
    }
    let rows = wait_for_rows(&pool, &prefix, 10 * saga::EVENT_TYPES.len() + 6, Duration::from_secs(30)).await;
    assert_eq!(rows.len(), 126, "log:\n{}", host.log_text());
    let key = format!("c:{}", saga::saga_id(11));
    let started = Instant::now();
    loop {
        let (_, body) = http_get(host.http, "/sagas/stuck").unwrap();
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let keys: Vec<&str> = page["sagas"].as_array().unwrap().iter().filter_map(|s| s["sagaKey"].as_str()).collect();
        if keys.contains(&key.as_str()) {
            assert_eq!(keys, [key.as_str()], "only the stopped saga is stuck: {page}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not listed: {page}\n{}", host.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("listed as stuck {:?} after its rows were stored", started.elapsed());

    let browser = Browser::start().await;
    let c = &browser.client;
    let base_url = format!("http://{}", host.http);
    c.goto(&format!("{base_url}/ui")).await.unwrap();
    c.find(Locator::LinkText("Stuck now")).await.unwrap().click().await.unwrap();
    browser.wait_for("Stuck now", "return location.pathname === '/ui/sagas'", Duration::from_secs(10)).await;
    let listed = browser.eval("return [...document.querySelectorAll('#stuck tbody tr')].map(r => r.dataset.key)").await;
    assert_eq!(listed, serde_json::json!([key]));
    let why = browser.eval("return document.querySelector('#stuck tbody tr').innerText").await;
    assert!(why.as_str().unwrap().contains("overdue") && why.as_str().unwrap().contains("order 11"), "{why}");
    // Its type's graph: the steps as boxes, drawn by the server.
    c.find(Locator::Css("#stuck tbody tr td:nth-child(2) a")).await.unwrap().click().await.unwrap();
    browser
        .wait_for("the type's graph", "return !!document.querySelector('svg#graph g.step')", Duration::from_secs(10))
        .await;
    let boxes = browser.eval("return document.querySelectorAll('svg#graph g.step').length").await.as_u64().unwrap();
    let arrows =
        browser.eval("return document.querySelectorAll('svg#graph g.transition').length").await.as_u64().unwrap();
    assert!(boxes >= 6 && arrows + 1 >= boxes, "{boxes} steps, {arrows} transitions");
    let drawn = browser.eval("return document.querySelector('svg#graph').getBoundingClientRect().width").await;
    assert!(drawn.as_f64().unwrap() > 300.0, "the graph is drawn: {drawn}");
    // The order's page says where it is stuck.
    c.goto(&format!("{base_url}/ui/order/11")).await.unwrap();
    let banner = browser.eval("return document.getElementById('overdue')?.innerText ?? ''").await;
    assert!(banner.as_str().unwrap().starts_with("Stuck: overdue at"), "{banner}");
    c.goto(&format!("{base_url}/ui/order/10")).await.unwrap();
    let banner = browser.eval("return document.getElementById('overdue') === null").await;
    assert_eq!(banner, true, "a whole saga is not stuck");
    assert_eq!(host.metric("notification_console_csp_violations_total"), Some(0.0), "no page broke its policy");
    browser.close().await;
}

/// Counts connections to a port that nothing in the console may reach.
fn canary() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_render_inert_in_a_browser() {
    let prefix = unique("uih");
    let (db_url, pool) = fresh_database("console").await;
    let topic = format!("{prefix}-hostile");
    Kafka::shared().create_topic(&topic, 1).await;
    let host = Host::start(&HostOptions::new(&db_url, &prefix));
    host.wait_ready(Duration::from_secs(60));
    let base = format!("http://{}", host.http);
    let (trap, hits) = canary();
    let hostile = [
        "<script>alert('script')</script>".to_owned(),
        format!("<img src=\"http://{trap}/img\" onerror=\"alert('img')\">"),
        format!("\"><script src=\"http://{trap}/js\"></script>"),
        "javascript:alert('url')".to_owned(),
        format!("<a href=\"javascript:fetch('http://{trap}/a')\">click</a>"),
        format!("</pre></td></tr></table><iframe src=\"http://{trap}/frame\"></iframe>"),
        format!(
            "<link rel=\"stylesheet\" href=\"http://{trap}/css\"><style>body{{background:url(http://{trap}/bg)}}</style>"
        ),
        "' onmouseover='alert(1)' x='".to_owned(),
    ];
    let order = hostile[0].clone();
    let mut records: Vec<Out> = hostile
        .iter()
        .map(|h| {
            let value = serde_json::json!({"type": h, "correlation_id": h, "source": h,
                "payload": {"order_id": order, "customer_id": h, "runner_id": h, "status": h}});
            let mut out = Out::new(&topic, value.to_string());
            out.key = Some(h.clone().into_bytes());
            out.headers = vec![(h.clone().into_bytes(), Some(h.clone().into_bytes()))];
            out
        })
        .collect();
    // The ingest tests' hostile values, tied to the same order where they
    // are JSON objects the rules can read.
    records.extend(hostile_values(&topic).into_iter().map(|(o, _)| o));
    let nested = format!(
        "{{\"type\": \"deep\", \"payload\": {{\"order_id\": {}, \"deep\": {}1{}}}}}",
        serde_json::json!(order),
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    records.push(Out::new(&topic, nested));
    let big = format!(
        "{{\"type\": \"big-hostile\", \"payload\": {{\"order_id\": {}, \"blob\": \"{}\"}}}}",
        serde_json::json!(order),
        "<script>alert(2)</script>".repeat(40_000)
    );
    records.push(Out::new(&topic, big));

    let browser = Browser::start().await;
    let c = &browser.client;
    // The live tail is open while they arrive.
    browser.open_live_tail(&format!("{base}/ui/live")).await;
    let producer = Kafka::shared().producer();
    for out in &records {
        produce(&producer, out).await;
    }
    let rows = wait_for_rows(&pool, &prefix, records.len(), Duration::from_secs(60)).await;
    assert_eq!(rows.len(), records.len(), "every hostile record is stored");
    browser
        .wait_for(
            "hostile rows in the live tail",
            "return document.querySelectorAll('#tail tbody tr').length >= 10",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(browser.open_dialog().await, None, "the live tail ran no script");

    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT notification_id FROM notifications ORDER BY 1").fetch_all(&pool).await.unwrap();
    let segment = |s: &str| notification_host::http::console::path_segment(s);
    let mut pages = vec![
        "/ui".to_owned(),
        format!("/ui/order/{}", segment(&order)),
        format!("/ui/correlation/{}", segment(&hostile[1])),
        format!("/ui/customer/{}", segment(&hostile[3])),
        format!("/ui/runner/{}", segment(&hostile[4])),
        format!("/ui/search?q={}", segment(&hostile[2])),
        "/ui/normalizers".to_owned(),
        "/ui/sagas".to_owned(),
    ];
    pages.extend(ids.iter().map(|id| format!("/ui/record/{id}")));
    for page in &pages {
        c.goto(&format!("{base}{page}")).await.unwrap();
        assert_eq!(browser.open_dialog().await, None, "{page} opened a dialog");
        // Hover everything, in case a value became an attribute.
        browser.eval("document.querySelectorAll('*').forEach(e => e.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})))").await;
        assert_eq!(browser.open_dialog().await, None, "{page} ran a handler");
        let resources = browser.eval("return performance.getEntriesByType('resource').map(e => e.name)").await;
        for r in resources.as_array().unwrap() {
            assert!(r.as_str().unwrap().starts_with(&base), "{page} loaded {r}");
        }
        let frames = browser.eval("return document.querySelectorAll('iframe, img, link[rel=stylesheet]:not([href^=\"/ui/assets/\"])').length").await;
        assert_eq!(frames, 0, "{page} holds an element a value made");
    }
    // Readable: the order page shows the values as text.
    c.goto(&format!("{base}/ui/order/{}", segment(&order))).await.unwrap();
    let text = browser.eval("return document.body.innerText").await;
    assert!(text.as_str().unwrap().contains("<script>alert('script')</script>"), "shown as text");
    // A megabyte value is cut on its page, with a link to all of it.
    let big_id: i64 = sqlx::query_scalar("SELECT notification_id FROM notifications WHERE event_type = 'big-hostile'")
        .fetch_one(&pool)
        .await
        .unwrap();
    c.goto(&format!("{base}/ui/record/{big_id}")).await.unwrap();
    let size = browser.eval("return document.documentElement.outerHTML.length").await.as_u64().unwrap();
    assert!(size < 300_000, "the 1 MB record's page is {size} bytes");
    assert!(c.find(Locator::Css(&format!("a[href='/ui/record/{big_id}/value']"))).await.is_ok());

    assert_eq!(hits.load(Ordering::SeqCst), 0, "a page reached the canary");
    assert_eq!(
        wait_metric(&host, "notification_console_csp_violations_total", 1.0, Duration::from_secs(1)),
        0.0,
        "a page broke its policy"
    );

    // The check can fail: an inline script injected into a page is blocked
    // by the policy and reported.
    let ran = browser
        .eval("const s = document.createElement('script'); s.textContent = 'window.injected = 1'; document.body.appendChild(s); return window.injected === 1")
        .await;
    assert_eq!(ran, false, "the policy blocks inline script");
    assert!(
        wait_metric(&host, "notification_console_csp_violations_total", 1.0, Duration::from_secs(10)) >= 1.0,
        "violations are reported"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_token_guards_the_console_in_a_browser() {
    let prefix = unique("uit");
    let (host, _pool) =
        start_with_saga(&prefix, vec![("READ_TOKEN".into(), "night-shift-token-0123456789".into())]).await;
    let base = format!("http://{}", host.http);
    assert_eq!(http_get(host.http, "/order/4242").unwrap().0, 401, "the API needs the token");
    assert_eq!(http_get(host.http, "/health").unwrap().0, 200);

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{base}/ui/order/4242")).await.unwrap();
    browser.wait_for("the sign-in page", "return location.pathname === '/ui/login'", Duration::from_secs(10)).await;
    c.find(Locator::Css("input[name=token]")).await.unwrap().send_keys("wrong").await.unwrap();
    c.find(Locator::Css("main form button")).await.unwrap().click().await.unwrap();
    browser
        .wait_for(
            "a refusal",
            "return document.body.innerText.includes('That is not the read token.')",
            Duration::from_secs(10),
        )
        .await;
    c.find(Locator::Css("input[name=token]")).await.unwrap().send_keys("night-shift-token-0123456789").await.unwrap();
    c.find(Locator::Css("main form button")).await.unwrap().click().await.unwrap();
    browser
        .wait_for(
            "back on the order page",
            "return location.pathname === '/ui/order/4242' && !!document.getElementById('timeline')",
            Duration::from_secs(10),
        )
        .await;

    let cookies = c.get_all_cookies().await.unwrap();
    let cookie = cookies.iter().find(|k| k.name() == "nh_read").expect("the console's cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert_ne!(cookie.value(), "night-shift-token-0123456789", "the cookie holds a digest, not the token");
    assert_eq!(browser.eval("return document.cookie").await, "", "no script can read it");
    // The page's links to the API work with the cookie.
    let status = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; fetch('/order/4242').then(r => done(r.status))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);

    c.find(Locator::Css("header form[action='/ui/logout'] button")).await.unwrap().click().await.unwrap();
    browser.wait_for("signed out", "return location.pathname === '/ui/login'", Duration::from_secs(10)).await;
    c.goto(&format!("{base}/ui/live")).await.unwrap();
    browser.wait_for("asked again", "return location.pathname === '/ui/login'", Duration::from_secs(10)).await;
    browser.close().await;
}

/// A raw event-stream client: the lines it reads, as they arrive.
fn open_stream(addr: SocketAddr, path: &str) -> std::sync::mpsc::Receiver<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        let _ = tx.send("<closed>".into());
    });
    rx
}

/// Reads lines until one matches: the lines read (the match last) and how
/// long it took.
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let mut lines = Vec::new();
    loop {
        let left = timeout
            .checked_sub(started.elapsed())
            .unwrap_or_else(|| panic!("{what}: not within {timeout:?}: {lines:?}"));
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = pred(&line);
                lines.push(line);
                if done {
                    return (lines, started.elapsed());
                }
            }
            Err(_) => panic!("{what}: not within {timeout:?}: {lines:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_streams_show_every_replica_and_end_at_shutdown() {
    let prefix = unique("uil");
    let (db_url, _pool) = fresh_database("console").await;
    let topic = format!("{prefix}-orders");
    Kafka::shared().create_topic(&topic, 2).await;
    // A writes; B serves the API only and has no consumer.
    let writer = Host::start(&HostOptions::new(&db_url, &prefix));
    let mut reader_options = HostOptions::new(&db_url, &prefix);
    reader_options.env = vec![("ROLE".into(), "api".into()), ("SHUTDOWN_TIMEOUT".into(), "5s".into())];
    let mut reader = Host::start(&reader_options);
    writer.wait_ready(Duration::from_secs(60));
    reader.wait_ready(Duration::from_secs(60));

    let stream = open_stream(reader.http, &format!("/ui/live/events?topic={topic}"));
    wait_line(&stream, "the stream opens", Duration::from_secs(10), |l| l == "event: ready");
    let elsewhere = open_stream(reader.http, "/ui/live/events?topic=some-other-topic");
    wait_line(&elsewhere, "the other stream opens", Duration::from_secs(10), |l| l == "event: ready");
    produce(
        &Kafka::shared().producer(),
        &Out::new(&topic, r#"{"type": "order.created", "payload": {"order_id": "from-a"}}"#),
    )
    .await;
    let (_, took) = wait_line(&stream, "A's record on B's stream", Duration::from_secs(10), |l| {
        l.starts_with("data:") && l.contains("\"order_id\":\"from-a\"")
    });
    println!("a record stored by one replica reached another replica's stream {took:?} after it was produced");
    assert!(wait_metric(&reader, "notification_console_live_streams", 2.0, Duration::from_secs(1)) == 2.0);

    // Streams are counted as requests but kept out of the latency histogram.
    let (_, metrics) = http_get(reader.http, "/metrics").unwrap();
    let about_streams =
        |prefix: &str| metrics.lines().filter(|l| l.starts_with(prefix) && l.contains("/ui/live/events")).count();
    assert_eq!(about_streams("notification_http_requests_total"), 1, "{metrics}");
    assert_eq!(about_streams("notification_http_request_seconds"), 0, "{metrics}");

    // Shutdown ends open streams, so the host exits within its timeout.
    let took = reader.terminate(Duration::from_secs(10));
    assert!(took < Duration::from_secs(8), "exited {took:?} after SIGTERM with two streams open");
    let (lines, _) = wait_line(&stream, "the stream ends", Duration::from_secs(2), |l| l == "<closed>");
    assert!(lines.iter().any(|l| l == "event: bye"), "the stream said why it ended: {lines:?}");
    let (other, _) = wait_line(&elsewhere, "the other stream ends", Duration::from_secs(2), |l| l == "<closed>");
    assert!(!other.iter().any(|l| l.contains("from-a")), "a filtered stream got another topic's record: {other:?}");
}
