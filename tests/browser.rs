//! A deliberately small Chrome DevTools Protocol (CDP) driver for browser end-to-end tests.
//!
//! It starts a headless Chromium, talks to it over a single DevTools websocket and offers
//! just enough to drive a page: evaluate JavaScript, wait for a condition, take a screenshot.
//! Clicking, typing and reading the DOM are all done with [`Page::eval`], which keeps this
//! module small and the tests explicit about what they do in the page.
//!
//! ```ignore
//! let Some(browser) = Browser::launch().await? else {
//!     eprintln!("skipping: Chromium is not installed");
//!     return Ok(());
//! };
//! let page = browser.new_page("http://127.0.0.1:8080/").await?;
//! page.eval("document.querySelector('#submit').click()").await?;
//! page.wait_for("document.querySelector('#status').textContent === 'Done'", Duration::from_secs(5))
//!     .await?;
//! page.screenshot(Path::new("target/screenshots/submit.png")).await?;
//! ```
//!
//! How the pieces fit:
//!
//! * Chromium is started with `--remote-debugging-port=0`, so it picks a free port itself and
//!   tests running in parallel never race for one. It then writes the port and the browser's
//!   websocket path to `<user-data-dir>/DevToolsActivePort`; because every [`Browser`] gets a
//!   fresh user-data-dir, the file found there is always this Chromium's (never a stale one).
//! * There is exactly one websocket, to the browser target. Pages are attached with
//!   `flatten: true` ("flattened sessions"): their commands travel on the same socket with a
//!   top-level `sessionId` field and their responses come back as ordinary responses. Without
//!   flattening every page command would have to be wrapped in `Target.sendMessageToTarget`
//!   and every answer unwrapped from a `Target.receivedMessageFromTarget` event.
//! * Command ids come from one counter shared by all sessions, so a single reader task can
//!   route every response to its caller by `id` alone. Events are ignored: the API only
//!   ever waits by polling ([`Page::wait_for`]), which is simpler and hard to get wrong.
//!
//! Only what the workspace already depends on is used: the Chromium process is a
//! `std::process::Child` and files are read with `std::fs` (the workspace's tokio has neither
//! the `process` nor the `fs` feature), and base64 is decoded by a small local function.

use std::collections::HashMap;
use std::env;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
// `SinkExt` needs futures-util's `sink` feature; tokio-tungstenite always enables it.
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every CDP command must be answered within this time; a hung browser fails the test
/// with the command's name instead of hanging it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to start and write `DevToolsActivePort`.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long dropping a [`Browser`] waits for Chromium's helper processes to exit.
const HELPER_EXIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Browser::new_page`] waits for the page's `load` (`readyState === 'complete'`).
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling interval for `DevToolsActivePort` and for [`Page::wait_for`].
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Largest websocket message accepted: a base64 screenshot is sent as one message and can
/// exceed tungstenite's default limits (16 MiB per frame).
const MAX_MESSAGE_SIZE: usize = 256 << 20;

/// Command-line flags for Chromium, besides `--user-data-dir` and the start URL.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    // Tests run as root (in CI and dev containers), where Chromium refuses to start sandboxed.
    "--no-sandbox",
    "--disable-gpu",
    // The machine's network is closed: without these Chromium keeps trying to reach Google
    // services (QUIC, component updates, sync, ...) and fills the log with refused connections.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    // Containers often have a tiny /dev/shm; Chromium's renderers crash when it fills up.
    "--disable-dev-shm-usage",
    // Port 0: Chromium picks a free port and reports it in `DevToolsActivePort`.
    "--remote-debugging-port=0",
    "--window-size=1280,900",
];

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A headless Chromium and the DevTools connection to it.
///
/// Dropping the `Browser` kills Chromium and then deletes its temporary user-data-dir.
/// [`Page`]s outlive it only as dead handles: their commands then fail with a clear error.
pub struct Browser {
    conn: Arc<Connection>,
    reader: JoinHandle<()>,
    // Declared before `_user_data_dir`, so that even without `Drop for Browser` the process
    // would be gone before its profile directory is deleted.
    process: ChromiumProcess,
    _user_data_dir: tempfile::TempDir,
}

/// One browser tab, driven through a flattened CDP session on the [`Browser`]'s websocket.
pub struct Page {
    conn: Arc<Connection>,
    session_id: String,
}

impl Browser {
    /// Starts a headless Chromium with a fresh profile and connects to its DevTools endpoint.
    ///
    /// Chromium is looked up as: the path in `ORDERFLOW_CHROMIUM` (an error if it is set but
    /// is not an executable file), else `/usr/bin/chromium`, `/usr/bin/chromium-browser`, else
    /// `google-chrome` on `PATH`. Returns `Ok(None)` when none is installed, so that tests can
    /// skip instead of failing on machines without a browser.
    ///
    /// Chromium's stderr is discarded unless `TEST_LOG` is set (to anything).
    pub async fn launch() -> anyhow::Result<Option<Browser>> {
        let Some(executable) = find_chromium()? else {
            return Ok(None);
        };
        let user_data_dir = tempfile::Builder::new()
            .prefix("orderflow-chromium-")
            .tempdir()
            .context("failed to create a temporary user-data-dir for Chromium")?;
        let mut user_data_arg = OsString::from("--user-data-dir=");
        user_data_arg.push(user_data_dir.path());
        let stderr = if env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = Command::new(&executable)
            .args(CHROMIUM_FLAGS)
            .arg(user_data_arg)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to start Chromium ({})", executable.display()))?;
        // From here on an early return (`?`) drops `process`, which kills Chromium.
        let mut process = ChromiumProcess { child: Some(child) };

        let ws_url = wait_for_devtools_url(user_data_dir.path(), &mut process)
            .await
            .with_context(|| format!("Chromium ({}) did not start", executable.display()))?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_SIZE))
            .max_frame_size(Some(MAX_MESSAGE_SIZE));
        let connect =
            tokio_tungstenite::connect_async_with_config(ws_url.as_str(), Some(config), true);
        let (ws, _response) = tokio::time::timeout(COMMAND_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow!("timed out connecting to Chromium's DevTools at {ws_url}"))?
            .with_context(|| format!("failed to connect to Chromium's DevTools at {ws_url}"))?;
        let (sink, stream) = ws.split();
        let conn = Arc::new(Connection {
            sink: tokio::sync::Mutex::new(sink),
            pending: Pending::default(),
            next_id: AtomicU64::new(1),
        });
        let reader = tokio::spawn(read_loop(stream, Arc::clone(&conn)));
        Ok(Some(Browser {
            conn,
            reader,
            process,
            _user_data_dir: user_data_dir,
        }))
    }

    /// Opens a new tab, loads `url` in it and waits until the page has loaded
    /// (`document.readyState === 'complete'`).
    ///
    /// The tab is created blank and then navigated with `Page.navigate`, because that
    /// command reports network failures (`net::ERR_CONNECTION_REFUSED`, ...) as an error,
    /// which then becomes this function's `Err` instead of an error page to puzzle over.
    pub async fn new_page(&self, url: &str) -> anyhow::Result<Page> {
        let target = self
            .conn
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = required_str(&target, "targetId", "Target.createTarget")?;
        let attached = self
            .conn
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let page = Page {
            conn: Arc::clone(&self.conn),
            session_id: required_str(&attached, "sessionId", "Target.attachToTarget")?.to_owned(),
        };
        let loaded = async {
            page.call("Runtime.enable", json!({})).await?;
            page.call("Page.enable", json!({})).await?;
            let navigation = page.call("Page.navigate", json!({ "url": url })).await?;
            if let Some(error) = navigation.get("errorText").and_then(Value::as_str) {
                bail!("failed to load {url}: {error}");
            }
            page.wait_for("document.readyState === 'complete'", LOAD_TIMEOUT)
                .await
                .with_context(|| format!("{url} did not finish loading"))
        };
        if let Err(error) = loaded.await {
            // Best effort: don't leave a broken tab behind in a browser the test may reuse.
            let close = json!({ "targetId": target_id });
            let _ = self.conn.call(None, "Target.closeTarget", close).await;
            return Err(error);
        }
        Ok(page)
    }
}

impl Drop for Browser {
    /// Kills Chromium. The temporary user-data-dir is deleted afterwards by its own `Drop`
    /// (fields are dropped after this runs), once no Chromium process writes to it any more.
    fn drop(&mut self) {
        self.reader.abort();
        // Commands still in flight on surviving `Page`s fail now instead of timing out.
        self.conn
            .pending
            .close("the Browser was dropped".to_owned());
        self.process.kill();
    }
}

impl Page {
    /// Evaluates the JavaScript expression `js` in the page and returns its value as JSON.
    ///
    /// Promises are awaited (`awaitPromise`), and the result is serialized by value
    /// (`returnByValue`): `undefined` becomes `null`; values JSON cannot express (`NaN`,
    /// `Infinity`, `-0`, BigInts like `1n`) become their JavaScript spelling as a string.
    /// A thrown exception (or rejected promise) becomes an `Err` with the exception text.
    pub async fn eval(&self, js: &str) -> anyhow::Result<Value> {
        let mut response = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(details) = response.get("exceptionDetails") {
            return Err(JsException::new(js, details).into());
        }
        let Some(result) = response.get_mut("result") else {
            bail!("Runtime.evaluate returned no result for `{js}`");
        };
        if let Some(value) = result.get_mut("value") {
            return Ok(value.take());
        }
        if let Some(value) = result.get_mut("unserializableValue") {
            return Ok(value.take());
        }
        Ok(Value::Null)
    }

    /// Evaluates `js` every 50 ms until it returns exactly `true`, or fails once `timeout`
    /// has passed, reporting the last value (or exception) seen.
    ///
    /// While waiting, exceptions thrown by `js` and CDP errors (say, while the page
    /// navigates) count as "not yet": a condition like
    /// `document.querySelector('#x').textContent === 'ok'` may throw until `#x` exists.
    /// A `SyntaxError` fails at once, since it can never become true. A truthy value other
    /// than `true` does not count: write `!!expr` if that is what you mean.
    pub async fn wait_for(&self, js: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("nothing (no evaluation finished in time)");
        loop {
            match tokio::time::timeout_at(deadline, self.eval(js)).await {
                Ok(Ok(Value::Bool(true))) => return Ok(()),
                Ok(Ok(value)) => last = format!("value {value}"),
                Ok(Err(error)) if is_transient(&error) => last = format!("error: {error:#}"),
                Ok(Err(error)) => {
                    return Err(error.context(format!("while waiting for `{js}` to become true")));
                }
                Err(_elapsed) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for `{js}` to become true; last result: {last}"
                );
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    /// Captures the visible part of the page as a PNG and writes it to `path`, creating the
    /// parent directories if needed.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let response = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = required_str(&response, "data", "Page.captureScreenshot")?;
        let png = decode_base64(data).context("Page.captureScreenshot returned invalid base64")?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .with_context(|| format!("failed to create directory {}", parent.display()))?;
        }
        fs::write(path, png)
            .with_context(|| format!("failed to write screenshot to {}", path.display()))
    }

    /// Sends a command to this page's session.
    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.conn.call(Some(&self.session_id), method, params).await
    }
}

/// The websocket to the browser target, shared by the [`Browser`] and its [`Page`]s.
struct Connection {
    /// Writing half; an async mutex because a send is awaited while it is held.
    sink: tokio::sync::Mutex<SplitSink<WsStream, Message>>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Connection {
    /// Sends a CDP command (to a page's session if `session_id` is given, else to the
    /// browser) and waits up to [`COMMAND_TIMEOUT`] for its response's `result`.
    async fn call(
        &self,
        session_id: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({ "id": id, "method": method, "params": params });
        if let Some(session_id) = session_id {
            request["sessionId"] = Value::from(session_id);
        }
        let (sender, receiver) = oneshot::channel();
        // Unregisters the id however this function ends: answered, failed, timed out or
        // dropped mid-way (e.g. by `wait_for`'s deadline).
        let _waiter = self
            .pending
            .register(id, sender)
            .with_context(|| format!("CDP command {method} was not sent"))?;
        let exchange = async {
            self.sink
                .lock()
                .await
                .send(Message::text(request.to_string()))
                .await
                .with_context(|| format!("failed to send CDP command {method}"))?;
            receiver.await.map_err(|_| {
                anyhow!(
                    "CDP command {method} got no response: {}",
                    self.pending.closed_reason()
                )
            })
        };
        let response = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                anyhow!("CDP command {method} got no response within {COMMAND_TIMEOUT:?}")
            })??;
        if let Some(error) = response.get("error") {
            return Err(ProtocolError::new(method, error).into());
        }
        Ok(match response {
            Value::Object(mut fields) => fields.remove("result").unwrap_or(Value::Null),
            _ => Value::Null,
        })
    }

    /// Hands a message from Chromium to the caller waiting for it; events (no `id`) and
    /// anything unparsable are ignored.
    fn dispatch(&self, text: &str) {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            self.pending.resolve(id, message);
        }
    }
}

/// Reads every message from Chromium until the connection ends, then fails whatever is
/// still waiting for a response.
async fn read_loop(mut stream: SplitStream<WsStream>, conn: Arc<Connection>) {
    let reason = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => conn.dispatch(text.as_str()),
            Some(Ok(Message::Close(frame))) => {
                break format!("Chromium closed the DevTools connection ({frame:?})");
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => break format!("the DevTools connection failed: {error}"),
            None => break "the DevTools connection ended".to_owned(),
        }
    };
    conn.pending.close(reason);
}

/// Callers waiting for responses, by command id. A std mutex suffices: it is never held
/// across an `.await`.
#[derive(Default)]
struct Pending {
    inner: Mutex<PendingInner>,
}

#[derive(Default)]
struct PendingInner {
    waiters: HashMap<u64, oneshot::Sender<Value>>,
    /// Set once the connection is gone; later commands fail at once with this reason.
    closed: Option<String>,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, PendingInner> {
        // A panic elsewhere while holding the lock cannot leave the map inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, id: u64, sender: oneshot::Sender<Value>) -> anyhow::Result<Waiter<'_>> {
        let mut inner = self.lock();
        if let Some(reason) = &inner.closed {
            bail!("{reason}");
        }
        inner.waiters.insert(id, sender);
        Ok(Waiter { pending: self, id })
    }

    fn resolve(&self, id: u64, response: Value) {
        let sender = self.lock().waiters.remove(&id);
        if let Some(sender) = sender {
            // The caller may have given up (timeout, dropped future); nothing to do then.
            let _ = sender.send(response);
        }
    }

    /// Marks the connection as gone and wakes every waiter (their senders are dropped).
    fn close(&self, reason: String) {
        let mut inner = self.lock();
        inner.closed.get_or_insert(reason);
        inner.waiters.clear();
    }

    fn closed_reason(&self) -> String {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| "the DevTools connection closed".to_owned())
    }
}

/// Removes a command's entry from [`Pending`] when the call ends, however it ends.
struct Waiter<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.pending.lock().waiters.remove(&self.id);
    }
}

/// The Chromium process; killed (and reaped) on drop, or earlier by [`ChromiumProcess::kill`].
struct ChromiumProcess {
    child: Option<Child>,
}

impl ChromiumProcess {
    /// Kills the browser process and waits (briefly) for its helper processes to follow.
    ///
    /// Only the browser process is ours to kill; its helpers (zygotes, renderers, GPU and
    /// network services) notice that it is gone and exit on their own, usually within
    /// milliseconds. Until they have, they may still write to the user-data-dir, and
    /// deleting it then fails half-way and leaves it behind in the temp dir.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let helpers = descendants(child.id());
        // Errors mean it has already exited; `wait` then just reaps it.
        let _ = child.kill();
        let _ = child.wait();
        let deadline = std::time::Instant::now() + HELPER_EXIT_TIMEOUT;
        while helpers.iter().any(|&pid| is_running(pid)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Returns the exit status if Chromium has already exited.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }
}

impl Drop for ChromiumProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CDP command answered with an `error` instead of a `result`.
#[derive(Debug)]
struct ProtocolError {
    method: String,
    code: i64,
    message: String,
}

impl ProtocolError {
    fn new(method: &str, error: &Value) -> Self {
        let mut message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned();
        if let Some(data) = error.get("data").and_then(Value::as_str) {
            message = format!("{message}: {data}");
        }
        ProtocolError {
            method: method.to_owned(),
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CDP command {} failed: {} (code {})",
            self.method, self.message, self.code
        )
    }
}

impl std::error::Error for ProtocolError {}

/// JavaScript evaluated by [`Page::eval`] threw (or its promise rejected).
#[derive(Debug)]
struct JsException {
    expression: String,
    /// Chromium's description, e.g. `Uncaught TypeError: Cannot read properties of null ...`.
    text: String,
    class_name: Option<String>,
}

impl JsException {
    fn new(expression: &str, details: &Value) -> Self {
        let exception = details.get("exception");
        // `description` holds "Error: message" plus the JS stack for Error objects; a thrown
        // primitive (`throw 'x'`) only has a `value`.
        let description = exception.and_then(|e| {
            e.get("description")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| e.get("value").map(Value::to_string))
        });
        let text = details
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("Uncaught");
        JsException {
            expression: expression.to_owned(),
            text: match description {
                // For a rejected promise `text` already ends with the description's first
                // line ("Uncaught (in promise) TypeError: nope"); don't repeat it.
                Some(description) => {
                    let first_line = description.lines().next().unwrap_or_default();
                    match text.strip_suffix(first_line) {
                        Some(prefix) if !first_line.is_empty() => format!("{prefix}{description}"),
                        _ => format!("{text} {description}"),
                    }
                }
                None => text.to_owned(),
            },
            class_name: exception
                .and_then(|e| e.get("className"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

impl fmt::Display for JsException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JavaScript exception in `{}`: {}",
            self.expression, self.text
        )
    }
}

impl std::error::Error for JsException {}

/// Whether [`Page::wait_for`] should keep polling after `error`: exceptions from the
/// expression (except `SyntaxError`s) and CDP errors may go away as the page changes;
/// transport failures and command timeouts will not.
fn is_transient(error: &anyhow::Error) -> bool {
    if let Some(exception) = error.downcast_ref::<JsException>() {
        return exception.class_name.as_deref() != Some("SyntaxError");
    }
    error.downcast_ref::<ProtocolError>().is_some()
}

/// Reads the DevTools websocket URL from `<user_data_dir>/DevToolsActivePort`, polling
/// until Chromium has written it (or has exited, or [`LAUNCH_TIMEOUT`] has passed).
async fn wait_for_devtools_url(
    user_data_dir: &Path,
    process: &mut ChromiumProcess,
) -> anyhow::Result<String> {
    let file = user_data_dir.join("DevToolsActivePort");
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    loop {
        match fs::read_to_string(&file) {
            // The file may be seen half-written; an incomplete one is just read again.
            Ok(contents) => {
                if let Some(url) = parse_devtools_active_port(&contents) {
                    return Ok(url);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("failed to read {}", file.display()));
            }
        }
        if let Some(status) = process
            .try_wait()
            .context("failed to check on the Chromium process")?
        {
            bail!(
                "Chromium exited ({status}) before opening its DevTools port; set TEST_LOG=1 to see its stderr"
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not appear within {LAUNCH_TIMEOUT:?}; set TEST_LOG=1 to see Chromium's stderr",
                file.display()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Parses `DevToolsActivePort`: line 1 is the port, line 2 the browser target's path
/// (`/devtools/browser/<id>`). Returns `None` for incomplete contents.
fn parse_devtools_active_port(contents: &str) -> Option<String> {
    let mut lines = contents.lines();
    let port: u16 = lines.next()?.trim().parse().ok()?;
    let path = lines.next()?.trim();
    if port == 0 || !path.starts_with("/devtools/browser/") {
        return None;
    }
    Some(format!("ws://127.0.0.1:{port}{path}"))
}

/// The pids of all descendants of `root`, from the parent pids in `/proc/<pid>/stat`.
/// Empty where `/proc` cannot be read (then nothing is waited for).
fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            Some((pid, proc_stat(pid)?.1))
        })
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while let Some(&parent) = found.get(next) {
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    found.split_off(1)
}

/// Whether `pid` exists and is not a zombie (a zombie can no longer write files).
fn is_running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != "Z" && state != "X")
}

/// The state and parent pid from `/proc/<pid>/stat`, or `None` if there is no such process.
fn proc_stat(pid: u32) -> Option<(String, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may itself contain spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.to_owned();
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Finds the Chromium executable; see [`Browser::launch`] for the search order.
fn find_chromium() -> anyhow::Result<Option<PathBuf>> {
    if let Some(configured) = env::var_os("ORDERFLOW_CHROMIUM").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(configured);
        if !is_executable(&path) {
            bail!(
                "ORDERFLOW_CHROMIUM is set to {}, which is not an executable file",
                path.display()
            );
        }
        return Ok(Some(path));
    }
    let well_known = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from);
    let on_path = env::var_os("PATH")
        .map(|paths| {
            env::split_paths(&paths)
                .map(|dir| dir.join("google-chrome"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    Ok(well_known.chain(on_path).find(|path| is_executable(path)))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Looks up a string field of a CDP result, failing with the command's name if it is missing.
fn required_str<'a>(result: &'a Value, field: &str, method: &str) -> anyhow::Result<&'a str> {
    result
        .get(field)
        .and_then(Value::as_str)
        .with_context(|| format!("CDP command {method} returned no {field}: {result}"))
}

/// Decodes standard base64 (with or without `=` padding), as CDP uses for binary data.
fn decode_base64(input: &str) -> anyhow::Result<Vec<u8>> {
    let digits = input.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for (offset, &byte) in digits.iter().enumerate() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!(
                "invalid base64 character {:?} at offset {offset}",
                char::from(byte)
            ),
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
