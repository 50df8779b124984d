//! The web UI in a real, headless Chromium: sign in, order, and watch the status change live.

use std::time::Duration;

use serde_json::json;

use orderflow_tests::browser::{Browser, Page};
use orderflow_tests::oidc_provider::{Provider, auth_settings};
use orderflow_tests::{spawn_app, spawn_app_using_on, unique_sku};

/// Sets an input's value the way typing would, so the page's listeners see it.
fn fill(selector: &str, value: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({s}); e.value = {v}; \
         e.dispatchEvent(new Event('input', {{bubbles: true}})); \
         e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
        s = json!(selector),
        v = json!(value)
    )
}

/// Chromium, or `None` on a machine without it (CI must have it: `.ci/run` installs it).
async fn chromium() -> Option<Browser> {
    let browser = Browser::launch().await.expect("Chromium starts");
    if browser.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium (.ci/run installs it)"
        );
        eprintln!("skipped: no Chromium on this machine (apt-get install chromium)");
    }
    browser
}

/// Signs in on the development login page.
async fn sign_in(page: &Page, name: &str, role: &str, wait: Duration) {
    page.wait_for("!!document.querySelector('#login-form')", wait)
        .await
        .unwrap();
    page.eval(&fill("#login-name", name)).await.unwrap();
    page.eval(&fill("#login-role", role)).await.unwrap();
    page.eval("document.querySelector('#login-form').requestSubmit()")
        .await
        .unwrap();
}

/// In the shop: waits for `sku`'s row and the live feed, orders `quantity` of it to a
/// Berlin address and submits.
async fn order_in_the_shop(page: &Page, sku: &str, quantity: &str, wait: Duration) {
    let input = format!("input.qty[data-sku={}]", json!(sku));
    page.wait_for(&format!("!!document.querySelector({})", json!(input)), wait)
        .await
        .unwrap();
    page.wait_for(
        "document.querySelector('#live')?.textContent.trim() === 'live'",
        wait,
    )
    .await
    .unwrap();
    page.eval(&fill(&input, quantity)).await.unwrap();
    for (field, value) in [
        ("#ship-name", "Bea Browser"),
        ("#ship-line1", "1 Chromium Way"),
        ("#ship-city", "Berlin"),
        ("#ship-postal", "10115"),
        ("#ship-country", "DE"),
    ] {
        page.eval(&fill(field, value)).await.unwrap();
    }
    page.eval("document.querySelector('#order-form').requestSubmit()")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_customer_orders_in_the_browser_and_sees_it_confirmed_then_shipped_live() {
    let Some(browser) = chromium().await else {
        return;
    };
    let app = spawn_app().await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 450, 5).await;
    let wait = Duration::from_secs(15);
    let page = browser.new_page(&app.url("/#/login")).await.unwrap();

    sign_in(&page, "browser-bea", "customer", wait).await;
    // A marker that a page reload would wipe: the updates below must arrive without one.
    page.wait_for("document.readyState === 'complete'", wait)
        .await
        .unwrap();
    page.eval("window.__noReload = true").await.unwrap();
    // The address inputs take their limits from the served OpenAPI document, which the
    // server writes from the constants it checks with.
    page.wait_for("!!document.querySelector('#ship-postal')", wait)
        .await
        .unwrap();
    let limits = page
        .eval("['#ship-name', '#ship-line1', '#ship-postal'].map((s) => document.querySelector(s).maxLength)")
        .await
        .unwrap();
    assert_eq!(
        limits,
        json!([
            domain::values::NAME_MAX,
            domain::values::LINE_MAX,
            domain::values::POSTAL_CODE_MAX
        ])
    );
    let qty = format!(
        "document.querySelector('input.qty[data-sku={}]')",
        json!(sku)
    );
    page.wait_for(&format!("!!{qty}"), wait).await.unwrap();
    let most = page.eval(&format!("Number({qty}.max)")).await.unwrap();
    assert_eq!(most, json!(domain::values::Quantity::MAX));
    order_in_the_shop(&page, &sku, "2", wait).await;

    let row_status =
        "document.querySelector('#orders tr[data-order-id] .status')?.textContent.trim()";
    page.wait_for(
        &format!("{row_status} === 'confirmed' && window.__noReload === true"),
        wait,
    )
    .await
    .unwrap();
    let order_id = page
        .eval("document.querySelector('#orders tr[data-order-id]').dataset.orderId")
        .await
        .unwrap();
    let order_id = order_id.as_str().unwrap();

    // An operator ships it from the operations page in another tab; the customer's page
    // follows without reloading.
    let ops = browser.new_page(&app.url("/#/login")).await.unwrap();
    sign_in(&ops, "olga", "operator", wait).await;
    let ops_row =
        format!("document.querySelector('#operator-orders tr[data-order-id=\"{order_id}\"]')");
    ops.wait_for(&format!("!!{ops_row}?.querySelector('button.ship')"), wait)
        .await
        .unwrap();
    ops.eval(&format!("{ops_row}.querySelector('button.ship').click()"))
        .await
        .unwrap();
    let form = format!("#operator-orders tr[data-order-id=\"{order_id}\"] form.ship-form");
    ops.eval(&fill(&format!("{form} input[name=carrier]"), "DHL"))
        .await
        .unwrap();
    ops.eval(&fill(&format!("{form} input[name=tracking_number]"), "JD1"))
        .await
        .unwrap();
    ops.eval(&format!("document.querySelector('{form}').requestSubmit()"))
        .await
        .unwrap();
    let operator = app.token("olga", "operator").await;
    let view = app
        .wait_for(&operator, order_id, |v| v["status"] == "shipped")
        .await;
    assert_eq!(
        view["tracking_number"], "JD1",
        "the form sent what was typed"
    );
    page.wait_for(
        &format!("{row_status} === 'shipped' && window.__noReload === true"),
        wait,
    )
    .await
    .unwrap();

    let shot = app.data_dir.join("orders.png");
    page.screenshot(&shot).await.unwrap();
    if let Ok(dir) = std::env::var("ORDERFLOW_SCREENSHOTS") {
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("orders.png"));
    }
}

/// The analyst page in Chromium: the summary counts the orders, the log filters by type, an
/// order is shown as it was before its confirmation, and a replay started there runs to the
/// end with its progress shown.
#[tokio::test]
async fn an_analyst_reads_the_summary_filters_the_log_travels_in_time_and_replays() {
    let Some(browser) = chromium().await else {
        return;
    };
    let app = spawn_app().await;
    let orders = app.settled_orders("browsing-bo").await;
    let wait = Duration::from_secs(20);
    let page = browser.new_page(&app.url("/#/login")).await.unwrap();
    sign_in(&page, "ann", "analyst", wait).await;

    // The summary: one order in each final state (it follows the log within seconds).
    page.wait_for(
        "document.querySelector('#summary-status [data-status=confirmed]')?.textContent === '1' \
         && document.querySelector('#summary-status [data-status=cancelled]')?.textContent === '1'",
        wait,
    )
    .await
    .unwrap();
    let sku_row = format!("#summary-skus tr[data-sku={}]", json!(orders.sku));
    page.wait_for(
        &format!("!!document.querySelector({})", json!(sku_row)),
        wait,
    )
    .await
    .unwrap();

    // The log, only rejections: the one rejected order.
    page.eval(&fill("#log-type", "OrderRejected"))
        .await
        .unwrap();
    page.eval("document.querySelector('#log-form').requestSubmit()")
        .await
        .unwrap();
    page.wait_for(
        "document.querySelectorAll('#log-events tbody tr').length === 1 && \
         document.querySelector('#log-events .event-type').textContent === 'OrderRejected'",
        wait,
    )
    .await
    .unwrap();

    // The confirmed order as of the moment it was placed: placed, its later events dimmed.
    let view = app.view(&orders.token, &orders.confirmed).await;
    // The page takes local time to the millisecond: the first millisecond after placement.
    let placed_at = chrono::DateTime::parse_from_rfc3339(view["placed_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Local)
        + chrono::Duration::milliseconds(1);
    let placed_at = placed_at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    page.eval(&fill("#moment-order", &orders.confirmed))
        .await
        .unwrap();
    page.eval(&fill("#moment-at", &placed_at)).await.unwrap();
    page.eval("document.querySelector('#moment-form').requestSubmit()")
        .await
        .unwrap();
    page.wait_for(
        "document.querySelector('#moment-status')?.textContent === 'placed' && \
         document.querySelectorAll('#moment-timeline li.after-cutoff').length >= 1",
        wait,
    )
    .await
    .unwrap();

    // A replay of the analytics, followed to the end.
    for projection in ["orders", "catalog"] {
        page.eval(&format!(
            "document.querySelector('#replay-form input[value={projection}]').checked = false"
        ))
        .await
        .unwrap();
    }
    page.eval("document.querySelector('#replay-form').requestSubmit()")
        .await
        .unwrap();
    page.wait_for(
        "document.querySelector('#replay-text')?.dataset.state === 'succeeded'",
        wait,
    )
    .await
    .unwrap();
    let text = page
        .eval("document.querySelector('#replay-text').textContent")
        .await
        .unwrap();
    assert!(
        text.as_str().unwrap().contains("generation 1"),
        "the page says where readers went: {text}"
    );

    let shot = app.data_dir.join("analyst.png");
    page.screenshot(&shot).await.unwrap();
    if let Ok(dir) = std::env::var("ORDERFLOW_SCREENSHOTS") {
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("analyst.png"));
    }
}

/// The operator page's dead letters in Chromium: a poison event parked by every subscription
/// is listed; a discard without a reason is refused on the page; the projector's is discarded
/// with one and its row goes; the notifier's is re-driven (the notifier, still unable to read
/// it, parks it again later, which shows it really went back).
#[tokio::test]
async fn an_operator_sees_redrives_and_discards_dead_letters() {
    let Some(browser) = chromium().await else {
        return;
    };
    let app = spawn_app().await;
    let poison = crate::dead_letters::poison(&app).await;
    let first_parked = app
        .hooks
        .bus
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.subscription == "notifier")
        .and_then(|d| d.dead_at)
        .unwrap();
    let wait = Duration::from_secs(20);
    let page = browser.new_page(&app.url("/#/login")).await.unwrap();
    sign_in(&page, "olive", "operator", wait).await;
    page.wait_for("location.hash === '#/operator'", wait)
        .await
        .unwrap();
    let row = |subscription: &str| {
        format!(
            "document.querySelector('#dead-table tr[data-key=\"{subscription}/{}\"]')",
            poison.event_id
        )
    };
    page.wait_for(
        &format!(
            "document.querySelectorAll('#dead-table tbody tr').length === 3 && \
             !!{} && !!{} && !!{}",
            row("order-processor"),
            row("projector"),
            row("notifier")
        ),
        wait,
    )
    .await
    .unwrap();
    let counts = page
        .eval("document.querySelector('#dead-counts').textContent")
        .await
        .unwrap();
    assert_eq!(
        counts.as_str().unwrap(),
        "order-processor: 1 · projector: 1 · notifier: 1"
    );

    // Discard the projector's: a reason is required, on the page.
    let projector = row("projector");
    page.eval(&format!(
        "{projector}.querySelector('button.discard').click()"
    ))
    .await
    .unwrap();
    page.eval(&format!(
        "{projector}.querySelector('form.discard-form').requestSubmit()"
    ))
    .await
    .unwrap();
    page.wait_for(
        &format!("!{projector}.querySelector('.row-errors').hidden"),
        wait,
    )
    .await
    .unwrap();
    page.eval(&format!(
        "(() => {{ const i = {projector}.querySelector('input[name=reason]'); i.value = 'a test poison'; \
         i.dispatchEvent(new Event('input', {{bubbles: true}})); \
         {projector}.querySelector('form.discard-form').requestSubmit(); return true; }})()"
    ))
    .await
    .unwrap();
    page.wait_for(
        &format!(
            "!{projector} && document.querySelector('#dead-message').textContent.startsWith('Discarded')"
        ),
        wait,
    )
    .await
    .unwrap();

    // Re-drive the notifier's.
    page.eval(&format!(
        "{}.querySelector('button.redrive').click()",
        row("notifier")
    ))
    .await
    .unwrap();
    page.wait_for(
        "document.querySelector('#dead-message').textContent === 'Re-driven: notifier gets it again.'",
        wait,
    )
    .await
    .unwrap();
    orderflow_tests::eventually("the notifier parks it again", || async {
        let dead = app.hooks.bus.dead_letters().await.unwrap();
        match dead
            .iter()
            .find(|d| d.subscription == "notifier")
            .and_then(|d| d.dead_at)
        {
            Some(at) if at > first_parked => Ok(()),
            _ => Err(format!("{dead:?}")),
        }
    })
    .await;
    let left: Vec<String> = app
        .hooks
        .bus
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.subscription)
        .collect();
    assert!(
        !left.contains(&"projector".to_owned()),
        "the discarded one is gone: {left:?}"
    );

    let shot = app.data_dir.join("dead-letters.png");
    page.screenshot(&shot).await.unwrap();
    if let Ok(dir) = std::env::var("ORDERFLOW_SCREENSHOTS") {
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("dead-letters.png"));
    }
}

/// Sign-in at a real OpenID provider in Chromium: its own login page, back to the shop with a
/// token the page keeps only for the tab, an order confirmed, and sign-out at the provider.
#[tokio::test]
async fn a_customer_signs_in_at_the_provider_orders_and_signs_out_there() {
    let Some(browser) = chromium().await else {
        return;
    };
    // The provider must know where to send the browser back: the app's address, so bind first.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let root = format!("http://{}/", listener.local_addr().unwrap());
    let provider = Provider::start(&["--redirect-uri", &root, "--post-logout-redirect-uri", &root]);
    let app = spawn_app_using_on(Some(listener), |settings| {
        settings.auth = auth_settings(&provider.issuer, Duration::from_secs(5));
    })
    .await;
    let sku = unique_sku("OIDC");
    app.list_product(&sku, 450, 5).await;
    let wait = Duration::from_secs(20);
    let page = browser.new_page(&app.url("/#/login")).await.unwrap();

    // No development login here: one button that leaves for the provider.
    page.wait_for(
        "!document.querySelector('#login-provider').hidden && document.querySelector('#login-dev').hidden",
        wait,
    )
    .await
    .unwrap();
    page.eval("document.querySelector('#login-provider-button').click()")
        .await
        .unwrap();
    page.wait_for(
        &format!(
            "location.origin === {} && !!document.querySelector('input[name=login]')",
            json!(provider.issuer)
        ),
        wait,
    )
    .await
    .unwrap();
    page.eval(&fill("input[name=login]", "bea")).await.unwrap();
    page.eval(&fill("input[name=password]", "any"))
        .await
        .unwrap();
    page.eval("document.querySelector('input[name=login]').form.requestSubmit()")
        .await
        .unwrap();

    // Back in the shop, the code gone from the address, the token in this tab only.
    let quantity = format!("input.qty[data-sku={}]", json!(sku));
    page.wait_for(
        &format!("!!document.querySelector({})", json!(quantity)),
        wait,
    )
    .await
    .unwrap();
    let kept = page
        .eval(
            "({search: location.search, session: !!sessionStorage.getItem('orderflow.token'), \
              local: Object.keys(localStorage).filter((k) => /token|refresh/.test(k)), \
              who: document.querySelector('#whoami').textContent, \
              banner: document.querySelector('#dev-banner').hidden})",
        )
        .await
        .unwrap();
    assert_eq!(
        kept,
        json!({"search": "", "session": true, "local": [], "who": "Bea (customer)", "banner": true})
    );

    order_in_the_shop(&page, &sku, "1", wait).await;
    page.wait_for(
        "document.querySelector('#orders tr[data-order-id] .status')?.textContent.trim() === 'confirmed'",
        wait,
    )
    .await
    .unwrap();

    // Sign out here and at the provider, which asks first and then sends the browser back.
    page.eval("document.querySelector('#logout').click()")
        .await
        .unwrap();
    page.wait_for(
        "!!document.querySelector('button[name=logout][value=yes]')",
        wait,
    )
    .await
    .unwrap();
    page.eval("document.querySelector('button[name=logout][value=yes]').click()")
        .await
        .unwrap();
    page.wait_for(
        &format!(
            "location.href.startsWith({}) && !!document.querySelector('#login-provider-button') \
             && !sessionStorage.getItem('orderflow.token')",
            json!(root)
        ),
        wait,
    )
    .await
    .unwrap();
    let shot = app.data_dir.join("signed-out.png");
    page.screenshot(&shot).await.unwrap();
    app.stop().await;
}
