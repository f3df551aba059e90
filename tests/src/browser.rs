//! A real browser for the console tests: Debian's Chromium, driven through
//! ChromeDriver (WebDriver) with fantoccini. A machine without them fails
//! the test with what to install; nothing is skipped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use crate::{free_addr, unique};

/// A Chromium session, with its ChromeDriver, ended when dropped.
pub struct Browser {
    pub client: Client,
    driver: Driver,
}

/// ChromeDriver and the browser profile; dropping it ends ChromeDriver's
/// process group (Chromium included) and removes the profile.
struct Driver {
    child: Child,
    profile: PathBuf,
    log: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: the console tests drive a real browser. Install Debian's chromium and chromium-driver \
         (same version; scripts/test installs them), or point {env} at them.",
        path.display()
    );
    path
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with an empty profile.
    pub async fn start() -> Browser {
        Browser::start_sized(1400, 1000).await
    }

    pub async fn start_sized(width: u32, height: u32) -> Browser {
        let chromium = tool("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_addr().port();
        let log = std::env::temp_dir().join(format!("{}.log", unique("chromedriver")));
        let profile = std::env::temp_dir().join(unique("chromium-profile"));
        std::fs::create_dir_all(&profile).unwrap();
        let profile_arg = format!("--user-data-dir={}", profile.display());
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(chromedriver);
        command.arg(format!("--port={port}")).stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
        // Its own process group, so that dropping the browser ends Chromium's
        // processes too, whatever state the session is in.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = Driver { child: command.spawn().expect("chromedriver starts"), profile, log };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The flags a root user on a closed network needs: no sandbox, no
        // background connections (refused here), no first-run dialogs.
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            format!("--window-size={width},{height}"),
            profile_arg,
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector).capabilities(caps).connect(&url).await.unwrap_or_else(|e| {
            panic!(
                "cannot start Chromium through chromedriver: {e}; chromedriver log:\n{}",
                std::fs::read_to_string(&driver.log).unwrap_or_default()
            )
        });
        Browser { client, driver }
    }

    /// Ends the session (the browser closes), then the driver.
    pub async fn close(self) {
        let Browser { client, driver } = self;
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        drop(driver);
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns true, or panics after `timeout`.
    pub async fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.client.execute(script, vec![]).await.ok().and_then(|v| v.as_bool()) == Some(true) {
                return started.elapsed();
            }
            assert!(started.elapsed() < timeout, "{what}: not within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Opens the console's live tail at `url` and waits until its stream is
    /// connected.
    pub async fn open_live_tail(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        self.wait_for(
            "the live tail's stream",
            "return document.getElementById('live-status').innerText.includes('connected')",
            Duration::from_secs(10),
        )
        .await;
    }

    /// The text of an open JavaScript dialog (alert, confirm, prompt), if
    /// any: a page of the console must never open one.
    pub async fn open_dialog(&self) -> Option<String> {
        self.client.get_alert_text().await.ok()
    }
}
