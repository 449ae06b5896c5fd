"""The service advisor's pages (/ui): the evidence in words and the chart as plain functions, then a
real `bentoml serve` over a small trained fleet (with workshop readings, scored and delivered to the
reference CRM receiver) driven by Debian's chromium through Playwright: sign in, filter, open a car,
record outcomes, sign out; forged and cross-site forms; pages without a session; the API refusing the
session cookie.

Set UI_SCREENSHOTS=<dir> to keep the screenshots of the list and the vehicle page (docs/img/ holds them).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from autopdm import components, store
from autopdm.localproc import free_port
from autopdm.serving import explain
from autopdm.serving.auth import is_public
from autopdm.serving.ui.chart import risk_chart

from .procs import AUTOPDM, receiver_stats, start_receiver, stop
from .service_fleet import TOKEN, home_env, home_paths, serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VEHICLES, DAYS, SEED = 80, 500, 7   # long enough for the fleet to learn wear rates from pairs of readings
SCORED_DAYS_BEFORE = 3              # work orders were sent 3 days before "today": some of today's alerts are not


# -- plain functions (fast) -----------------------------------------------------------------------

def test_part_state_in_words():
    row = {"date": "2026-08-14", "pad_mm_front_last": 4.5, "pad_mm_front_age_days": 12.0, "pad_mm_rear_last": 6.5,
           "pad_mm_rear_age_days": 12.0, "km_since_brake_reading": 2310.0, "brake_state_est": 3.6,
           "brake_state_sd": 0.3, "brake_days_to_limit": 12.4}
    assert explain.facts("brake", row) == ["Front brake pads about 3.6 mm: 4.5 mm measured on 2026-08-02, about "
                                           "2,300 km since; 3 mm in about 12 days at this car's use."]
    worn = dict(row, brake_state_est=2.8, brake_days_to_limit=0.0, brake_state_sd=0.9)
    assert explain.facts("brake", worn)[0].endswith("at or past 3 mm already (uncertain: ± 0.9 mm).")
    # a reading but no learned rate yet; a part fitted on record but never read
    assert explain.facts("brake", {k: v for k, v in row.items() if not k.startswith("brake_")}) == [
        "Front brake pads 4.5 mm measured on 2026-08-02, about 2,300 km since (no wear rate learned yet)."]
    fitted = {"date": "2026-08-14", "tire_state_est": 7.1, "tire_days_to_limit": 900.0, "km_since_tire_service": 4000.0}
    assert explain.facts("tire", fitted) == ["Tire tread about 7.1 mm (no reading on record: estimated from a new part "
                                             "fitted about 4,000 km ago); more than a year from 3 mm at this car's use."]
    assert explain.facts("brake", {"date": "2026-08-14"}) == []          # nothing known: nothing said
    assert explain.facts("brake", {"date": "2026-08-14", "brake_state_est": float("nan")}) == []


def test_battery_trends_and_model_evidence_in_words():
    row = {"date": "2026-01-10", "crank_min_voltage_v_slope_30d": -0.4 / 30, "crank_min_voltage_v_7d": 9.4,
           "rest_voltage_v_min_7d": 12.25, "battery_soh_pct_last": 64.0, "battery_soh_pct_age_days": 40.0,
           "battery_state_est": 61.0, "battery_state_sd": 3.0, "battery_days_to_limit": 45.0}
    said = explain.facts("battery", row)
    assert said[0].startswith("12 V battery state of health about 61 %: 64 % measured on 2025-12-01")
    assert said[0].endswith("55 % in about 45 days at its present rate.")
    assert "Cranking voltage fell 0.4 V in a month (lowest this week 9.4 V)." in said
    assert any(s.startswith("Resting voltage down to 12.25 V this week") for s in said)
    evidence = [{"feature": "crank_min_voltage_v_7d", "value": 9.4, "contribution": 0.3},
                {"feature": "km_since_battery_service", "value": 41234.0, "contribution": 0.2},
                {"feature": "no_such_feature", "value": 1.0, "contribution": 0.1},
                {"feature": "idle_share_30d", "value": None, "contribution": 0.05}]
    assert explain.evidence_words(evidence) == ["Lowest cranking voltage in the last 7 days: 9.40 V.",
                                                "41,234 km since the last service of the 12 V battery."]
    words = explain.explain("battery", row, evidence)
    assert words[: len(said)] == said and len(words) <= explain.MAX_SENTENCES


def test_every_feature_of_a_component_family_has_words():
    """The part-state columns of every registered component are said in words (a new component too)."""
    from autopdm.pipeline.part_state import column_names

    for comp in components.all_components():
        silent = {f"{comp.name}_state_sd", f"{comp.name}_wear_rate"}  # said inside the state sentence
        missing = [c for c in column_names(comp) if c not in silent and explain.feature_words(c, 1.0) is None]
        assert not missing, f"{comp.name}: no words for {missing}"


def test_risk_chart_is_inline_svg():
    hist = [(pd.Timestamp("2026-01-01").date() + pd.Timedelta(days=i), r) for i, r in enumerate([0.05, 0.1, 0.3, 0.6])]
    svg = str(risk_chart(hist, threshold=0.2, high_cut=0.5, what="brake pads"))
    points = re.search(r'<polyline class="chart-risk" points="([^"]+)"', svg).group(1).split()
    assert len(points) == 4 and svg.startswith("<svg") and "<script" not in svg
    ys = [float(p.split(",")[1]) for p in points]
    assert ys == sorted(ys, reverse=True)                            # rising risk: the line climbs
    assert 'class="chart-alert"' in svg and "alert 20 %" in svg and "now 60 %" in svg
    assert "No risk history" in str(risk_chart([], 0.2, 0.5, "tires"))


# -- a served fleet ---------------------------------------------------------------------------------

BUILD = """
import sys
from pathlib import Path
from autopdm.config import Paths
from autopdm.modeling.train import train_all
from autopdm.pipeline.features import build_from_store
from autopdm.sim.fleet import simulate_fleet, write_fleet
paths = Paths(Path(sys.argv[1]).resolve()).ensure()
write_fleet(simulate_fleet(*map(int, sys.argv[2:5])), paths)
build_from_store(paths)   # with the workshop's readings: the part-state features the words come from
train_all(paths, seed=0)
"""


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory) -> Path:
    """A fleet with readings and champions; work orders scored 3 days before its last day and delivered
    to a real reference CRM receiver."""
    home = tmp_path_factory.mktemp("ui") / "var"
    # a cheap alert (break-even risk 1 %): this small fleet's risks stay low, and the page needs alerts to show
    r = subprocess.run([sys.executable, "-c", BUILD, str(home), str(VEHICLES), str(DAYS), str(SEED)],
                       env=home_env(home, AUTOPDM_COST_ALERT="5"), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    last = pd.read_parquet(home_paths(home).table("features"), columns=["date"])["date"].max()
    port = free_port()
    recv = start_receiver(home, port, home.parent / "receiver.log")
    try:
        env = home_env(home, AUTOPDM_CRM_WEBHOOK_URL=f"http://127.0.0.1:{port}/work-orders")
        day = (last - pd.Timedelta(days=SCORED_DAYS_BEFORE)).date().isoformat()
        r = subprocess.run([AUTOPDM, "score", "--as-of", day, "--emit", "--json"], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert receiver_stats(port)["work_orders"] > 0
    finally:
        stop(recv)
    return home


@pytest.fixture(scope="module")
def server(ui_home):
    with serving(ui_home, ui_home.parent / "serve.log") as url:
        yield url


def outbox_rows(home: Path) -> list[dict]:
    con = sqlite3.connect(home / "outbox.sqlite")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT work_order_id, vehicle_id, component, window_end, status FROM outbox")]
    finally:
        con.close()


def outcomes(home: Path) -> pd.DataFrame:
    return store.read_table("outcomes", home_paths(home))


def assessed(url: str, home: Path) -> dict:
    """Today's alerts as the API itself answers them: (vehicle, component) → assessment."""
    vins = list(store.read_table("vehicles", home_paths(home))["vehicle_id"])
    r = httpx.post(url + "/assess", json={"vehicle_ids": vins}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    return {"as_of": body["as_of"],
            "alerts": {(v["vehicle_id"], c): a for v in body["vehicles"] for c, a in v["components"].items() if a["alert"]}}


def sign_in(client: httpx.Client, url: str, token: str = TOKEN) -> httpx.Response:
    form = client.get(url + "/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client.post(url + "/ui/signin", data={"csrf": csrf, "token": token, "next": "/ui/"})


# -- without the browser ----------------------------------------------------------------------------

@pytest.mark.slow
def test_pages_without_a_session_go_to_sign_in(server, ui_home):
    vin = store.read_table("vehicles", home_paths(ui_home))["vehicle_id"].iloc[0]
    with httpx.Client(follow_redirects=False, timeout=30) as c:
        for path in ("/ui/", f"/ui/vehicles/{vin}", "/ui/?component=brake", "/ui/no-such-page"):
            r = c.get(server + path)
            assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin?next=/ui/"), (path, r.status_code)
        assert c.get(server + "/ui").headers["location"].endswith("/ui/")   # then the same redirect
        before = len(outcomes(ui_home))
        r = c.post(server + f"/ui/vehicles/{vin}/outcomes", data={"work_order_id": "wo-x", "status": "booked"})
        assert r.status_code == 303 and "/ui/signin" in r.headers["location"]
        assert len(outcomes(ui_home)) == before
        # a forged or stale cookie is no session
        c.cookies.set("autopdm_ui", "eyJwIjoiYXBpLXRva2VuOjEyMyIsImMiOiJ4In0.abc.def", domain="127.0.0.1", path="/ui")
        assert c.get(server + "/ui/").status_code == 303
        # a wrong token signs nobody in; a right one does
        c.cookies.clear()
        bad = sign_in(c, server, token="not-the-token")
        assert bad.status_code == 401 and "not valid" in bad.text and "autopdm_ui" not in c.cookies
        ok = sign_in(c, server)
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
        page = c.get(server + "/ui/")
        assert page.status_code == 200 and "Cars at risk" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]   # no script, no outside resources
        assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
        for bad_filter in ("?component=engine", "?band=low", "?page=0"):
            assert c.get(server + "/ui/" + bad_filter).status_code == 400


@pytest.mark.slow
def test_no_api_endpoint_accepts_the_session_cookie(server):
    with httpx.Client(follow_redirects=False, timeout=30) as c:
        assert sign_in(c, server).status_code == 303
        session = c.cookies["autopdm_ui"]
        assert c.get(server + "/ui/").status_code == 200
    paths = httpx.get(server + "/docs.json", timeout=30).json()["paths"]
    protected = [(p, m) for p, ms in paths.items() for m in ms if not is_public(p)]
    assert {"/assess", "/predict", "/model_info", "/reload", "/telemetry"} <= {p for p, _ in protected}
    for path, method in protected:
        r = httpx.request(method.upper(), server + path, json={}, timeout=30,
                          headers={"Cookie": f"autopdm_ui={session}"})
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
        r = httpx.request(method.upper(), server + path, json={}, timeout=30,
                          headers={"Cookie": f"autopdm_ui={session}", "Authorization": "Bearer " + session})
        assert r.status_code == 401, (path, "the cookie's value is no bearer token either")


# -- in a real browser ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install -y chromium; `make test` installs it "
                    "where apt-get can be used)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _timed(page, url: str) -> float:
    t = time.perf_counter()
    page.goto(url)
    return time.perf_counter() - t


def _shot(page, name: str, tmp: Path) -> None:
    """A screenshot (quantized to a small PNG); kept in $UI_SCREENSHOTS when set."""
    from PIL import Image

    path = tmp / name
    page.screenshot(path=str(path), full_page=True)
    img = Image.open(path)
    img = img.crop((0, 0, img.width, min(img.height, 1400))).convert("RGB").quantize(colors=64)
    img.save(path, optimize=True)
    if os.environ.get("UI_SCREENSHOTS"):
        Path(os.environ["UI_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["UI_SCREENSHOTS"]) / name)


@pytest.mark.slow
def test_advisor_clicks_through(browser, server, ui_home, tmp_path):
    from playwright.sync_api import expect

    api = assessed(server, ui_home)
    alerts, today = api["alerts"], api["as_of"]
    orders = {(o["vehicle_id"], o["component"]): o for o in outbox_rows(ui_home) if o["window_end"] >= today}
    assert alerts and orders, "the fleet must have alerts and work orders sent for them"
    ctx = browser.new_context(viewport={"width": 1024, "height": 768})
    page = ctx.new_page()

    # a car's page without a session → sign in → back to that car's page
    some_vin = next(iter(alerts))[0]
    page.goto(f"{server}/ui/vehicles/{some_vin}")
    assert "/ui/signin" in page.url and page.get_by_role("heading", name="Sign in").is_visible()
    page.fill("#token", "wrong")
    page.get_by_role("button", name="Sign in").click()
    assert "not valid" in page.get_by_role("alert").inner_text()
    page.fill("#token", TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/ui/vehicles/{some_vin}")
    cookie = next(c for c in ctx.cookies() if c["name"] == "autopdm_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"

    # the list: every alert of the API, riskiest first, with its delivery state
    times = {"list": _timed(page, f"{server}/ui/")}
    assert f"as of {today}" in page.locator("h1").inner_text()
    rows = page.locator("table.risks tbody tr")
    shown = [(rows.nth(i).locator("a.vin").inner_text(), rows.nth(i).locator("td[data-label=Part]").inner_text(),
              rows.nth(i).locator("td[data-label='Work order']").inner_text()) for i in range(rows.count())]
    parts = {components.get(c).part: c for c in components.names()}
    keys = [(vin, parts[part]) for vin, part, _ in shown]
    assert sorted(keys) == sorted(alerts)
    risks = [alerts[k]["risk"] for k in keys]
    assert risks == sorted(risks, reverse=True)
    for (vin, comp), (_, _, state) in zip(keys, shown):
        o = orders.get((vin, comp))
        assert state.startswith("delivered" if o and o["status"] == "delivered" else "not sent"), (vin, comp, state)
    assert any(s.startswith("delivered") for *_, s in shown)
    _shot(page, "advisor-list.png", tmp_path)

    # filter by part and band
    comp = max(components.names(), key=lambda c: sum(k[1] == c for k in alerts))
    page.select_option("select[name=component]", comp)
    page.select_option("select[name=band]", "medium")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**component=*")
    want = sorted(k for k, a in alerts.items() if k[1] == comp and a["risk_band"] == "medium")
    got = sorted((rows.nth(i).locator("a.vin").inner_text(), comp) for i in range(rows.count()))
    assert got == want and got

    # one car: risk history, the part in words, work orders, outcome buttons
    vin, comp = max(((k, o) for k, o in orders.items() if k in alerts and o["status"] == "delivered"),
                    key=lambda ko: alerts[ko[0]]["risk"])[0]
    times["vehicle"] = _timed(page, f"{server}/ui/vehicles/{vin}")
    assert page.locator("h1").inner_text() == vin
    charts = page.locator("svg.chart")
    assert charts.count() == len(components.names())
    feats = pd.read_parquet(home_paths(ui_home).table("features"), filters=[("vehicle_id", "==", vin)])
    recent = feats[feats["date"] >= pd.Timestamp(today) - pd.Timedelta(days=90)]
    points = charts.first.locator("polyline").get_attribute("points").split()
    assert len(points) == len(recent)
    _check_readings_quoted(page.locator("section.part").all_inner_texts(), vin, ui_home)
    _shot(page, "advisor-vehicle.png", tmp_path)

    # record an outcome: stored as the CRM's outcome records are
    wid = orders[(vin, comp)]["work_order_id"]
    order = page.locator(f"[id='{wid}']")
    order.get_by_role("button", name="Booked").click()
    page.wait_for_url(f"**recorded={wid}*")
    assert "Outcome recorded" in page.locator(f"[id='{wid}']").inner_text()
    got = outcomes(ui_home)
    booked = got[(got["work_order_id"] == wid) & (got["status"] == "booked")]
    assert len(booked) == 1 and booked.iloc[0]["source"] == "advisor"
    assert (booked.iloc[0]["vehicle_id"], booked.iloc[0]["component"]) == (vin, comp)
    assert "Booked" in page.locator(f"[id='{wid}'] .outcome-tag").first.inner_text()

    # a double click records one outcome, and so does the same form sent again
    page.locator(f"[id='{wid}']").get_by_role("button", name="Declined").dblclick()
    expect(page.locator(f"[id='{wid}'] .outcome-tag", has_text="Declined")).to_be_visible()
    csrf = page.locator(f"[id='{wid}'] input[name=csrf]").get_attribute("value")
    again = page.request.post(f"{server}/ui/vehicles/{vin}/outcomes", max_redirects=0,
                              form={"csrf": csrf, "work_order_id": wid, "status": "declined"})
    assert again.status == 303
    got = outcomes(ui_home)
    assert ((got["work_order_id"] == wid) & (got["status"] == "declined")).sum() == 1
    assert len(got[got["work_order_id"] == wid]) == 2

    # sign out: the cookie is gone and the pages want a sign-in again
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/signin?signed_out=1")
    assert "signed out" in page.get_by_role("status").inner_text()
    assert not [c for c in ctx.cookies() if c["name"] == "autopdm_ui"]
    page.goto(f"{server}/ui/vehicles/{vin}")
    assert "/ui/signin" in page.url
    ctx.close()
    print(f"\npage load in chromium: list {times['list'] * 1000:.0f} ms, vehicle {times['vehicle'] * 1000:.0f} ms")


def _check_readings_quoted(texts: list[str], vin: str, home: Path) -> None:
    """Every "<value> <unit> measured on <day>" on the page is a reading in the car's inspection records."""
    insp = store.read_table("inspections", home_paths(home))
    insp = insp[insp["vehicle_id"] == vin]
    quoted = re.findall(r"([\d.]+) (mm|%) measured on (\d{4}-\d{2}-\d{2})", "\n".join(texts))
    assert quoted, f"{vin}: no reading quoted on its page"
    for value, _, day in quoted:
        same_day = insp[pd.to_datetime(insp["date"]).dt.date.astype(str) == day]
        assert any(abs(float(value) - v) < 0.051 for v in same_day["value"]), (value, day, same_day)


@pytest.mark.slow
def test_forged_and_cross_site_forms_are_refused(browser, server, ui_home):
    api = assessed(server, ui_home)
    vin, comp = next(iter(api["alerts"]))
    wid = api["alerts"][(vin, comp)]["work_order_id"]   # today's recommendation: outcomes may be recorded on it
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{server}/ui/signin")
    page.fill("#token", TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/")
    before = len(outcomes(ui_home))

    # signed in, but the form lacks the session's CSRF token (or carries another one)
    for form in ({"work_order_id": wid, "status": "no_show"}, {"csrf": "x" * 32, "work_order_id": wid, "status": "no_show"}):
        r = page.request.post(f"{server}/ui/vehicles/{vin}/outcomes", form=form, max_redirects=0)
        assert r.status == 403 and "Form refused" in r.text()
    # another site's page posting to the service: SameSite=Strict keeps the cookie home, and the
    # browser's Sec-Fetch-Site / Origin say where the form came from
    page.set_content(f'<form method="post" action="{server}/ui/vehicles/{vin}/outcomes">'
                     f'<input name="work_order_id" value="{wid}"><button name="status" value="done_ok">go</button></form>')
    page.click("button")
    page.wait_for_load_state()
    assert "/ui/signin" in page.url or "Form refused" in page.content()
    # a sign-in form from elsewhere (no sign-in cookie bound to it) signs nobody in
    r = page.request.post(f"{server}/ui/signin", form={"csrf": "forged", "token": TOKEN, "next": "/ui/"}, max_redirects=0)
    assert r.status == 403
    got = outcomes(ui_home)
    assert len(got) == before and not got["status"].isin(["no_show", "done_ok"]).any()
    # the buttons of a work order of another car do not write records about it
    other = next(k for k in api["alerts"] if k[0] != vin)
    page.goto(f"{server}/ui/vehicles/{vin}")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post(f"{server}/ui/vehicles/{vin}/outcomes", max_redirects=0,
                          form={"csrf": csrf, "work_order_id": api["alerts"][other]["work_order_id"], "status": "booked"})
    assert r.status == 404 and len(outcomes(ui_home)) == before
    # while today's own recommendation for this car (sent or not) takes an outcome
    r = page.request.post(f"{server}/ui/vehicles/{vin}/outcomes", max_redirects=0,
                          form={"csrf": csrf, "work_order_id": wid, "status": "booked"})
    assert r.status == 303
    got = outcomes(ui_home)
    new = got[got["work_order_id"] == wid]
    assert len(got) == before + 1 and list(new[["vehicle_id", "component", "status"]].iloc[0]) == [vin, comp, "booked"]
    ctx.close()


@pytest.mark.slow
def test_vehicle_page_shows_upcoming_service_reminders(server, ui_home):
    """The car's services due within 30 days as /assess gives them, each with what became of its
    reminder (the fixture's `score --emit` sent those due within 7 days of its day)."""
    vins = list(store.read_table("vehicles", home_paths(ui_home))["vehicle_id"])
    r = httpx.post(server + "/assess", json={"vehicle_ids": vins}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    due = {v["vehicle_id"]: v["upcoming_reminders"] for v in r.json()["vehicles"] if v["upcoming_reminders"]}
    assert due, "the fleet must have services due within 30 days"
    sent = {o["work_order_id"] for o in outbox_rows(ui_home) if o["component"].startswith("reminder:")}
    assert sent, "score --emit sends service reminders"
    with httpx.Client(timeout=30) as c:
        sign_in(c, server)
        for vin, items in list(due.items())[:5]:
            page = c.get(server + f"/ui/vehicles/{vin}").text
            section = page[page.index('id="reminders"'):page.index('id="work-orders"')]
            for s in items:
                assert s["reminder_id"] in section and s["text"] in section and f"due {s['due_date']}" in section
                if s["reminder_id"] in sent:
                    assert "reminder delivered" in section or "reminder closed" in section
            # reminders are not work orders: no outcome buttons for them
            assert not any(s["reminder_id"] in page[page.index('id="work-orders"'):] for s in items)


@pytest.mark.slow
def test_pages_answer_quickly_enough_to_measure(server, ui_home):
    """Server-side page times (printed: the figures of docs/advisor-page.md); asserts only that they load."""
    api = assessed(server, ui_home)
    vin = max(api["alerts"], key=lambda k: api["alerts"][k]["risk"])[0]
    with httpx.Client(timeout=30) as c:
        sign_in(c, server)
        figures = {}
        for name, path in (("list", "/ui/"), ("vehicle", f"/ui/vehicles/{vin}")):
            ts = []
            for _ in range(30):
                t = time.perf_counter()
                r = c.get(server + path)
                ts.append(time.perf_counter() - t)
                assert r.status_code == 200
            figures[name] = (statistics.median(ts) * 1000, max(ts) * 1000)
    print("\n" + ", ".join(f"{k}: median {m:.1f} ms, max {x:.1f} ms" for k, (m, x) in figures.items()))
