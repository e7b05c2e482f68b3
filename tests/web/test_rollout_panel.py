"""The rollout panel's rendering (app/static/rollout.js), imported as a module into the real page and given
GET /rollouts/{id} answers as fixtures: every figure in its place, and whatever is missing or of an unknown
shape shown as "—" rather than breaking the panel. A rollout the server does not know (404) hides its panel."""
from playwright.sync_api import expect

RUNNING = {
    "id": "r-7", "alias": "production", "candidate": "m-cand", "status": "running", "step": 1, "percent": 50,
    "steps": [10, 50, 100], "shadow": False,
    "arms": {
        "control": {"model": "default", "requests": 5400, "errors": 3, "p50_ms": 2.4, "p99_ms": 11.8,
                    "impressions_with_feedback": 2100, "accepted": 1071, "acceptance_rate": 0.51,
                    "acceptance_ci": [0.47, 0.55]},
        "candidate": {"model": "m-cand", "live": {"requests": 5300, "errors": 0, "p50_ms": 2.6, "p99_ms": 12.9,
                                                  "impressions_with_feedback": 2050, "accepted": 1107,
                                                  "acceptance_rate": 0.54, "acceptance_ci": {"low": 0.5, "high": 0.58}}},
    },
    "decisions": [
        {"at": "2026-01-31T12:00:00+00:00", "action": "step_up", "step": 1, "percent": 50,
         "reason": "step 0 (10%) complete and not worse",
         "figures": {"test": {"difference": 0.012, "ci": [-0.021, 0.045], "p_worse": 0.91}}},
        {"at": "2026-01-31T12:30:00+00:00", "action": "hold", "step": 1, "percent": 50,
         "reason": "waiting: candidate requests 2000/3000", "figures": {"missing": ["candidate requests 2000/3000"]}},
    ],
}

RENDER = """async (rollouts) => {
  const m = await import("/static/rollout.js");
  for (const r of rollouts) document.querySelector("main").append(m.renderRollout(r));
}"""


def test_a_running_rollout_shows_its_step_its_arms_and_its_decisions_newest_first(server, open_page):
    page = open_page(server.url + "/", width=360)  # at phone width: its tables scroll, the page does not
    page.evaluate(RENDER, [RUNNING])
    panel = page.locator("#rollout-r-7")
    expect(panel.get_by_test_id("rollout-status")).to_have_text("running")
    expect(panel.get_by_test_id("rollout-alias")).to_have_text("production")
    expect(panel.get_by_test_id("rollout-candidate")).to_have_text("m-cand")
    expect(panel.get_by_test_id("rollout-step")).to_have_text("step 1")
    expect(panel.get_by_test_id("rollout-percent")).to_have_text("50% to the candidate")
    expect(panel.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "50")
    expect(panel).to_contain_text("steps 10% → 50% → 100%")
    control, candidate = panel.locator('[data-arm="control"]'), panel.locator('[data-arm="candidate"]')
    expected = {control: {"arm-requests": "5400", "arm-errors": "3", "arm-p50": "2.4 ms", "arm-p99": "12 ms",
                          "arm-feedback": "2100", "arm-accepted": "1071", "arm-acceptance": "51.0%",
                          "arm-ci": "[47.0%, 55.0%]"},
                candidate: {"arm-requests": "5300", "arm-errors": "0", "arm-p50": "2.6 ms", "arm-p99": "13 ms",
                            "arm-feedback": "2050", "arm-accepted": "1107", "arm-acceptance": "54.0%",
                            "arm-ci": "[50.0%, 58.0%]"}}
    for row, cells in expected.items():
        for testid, shown in cells.items():
            expect(row.get_by_test_id(testid)).to_have_text(shown)
    expect(candidate).to_contain_text("m-cand")
    decisions = panel.get_by_test_id("rollout-decision")
    assert decisions.evaluate_all("rows => rows.map(r => r.dataset.action)") == ["hold", "step_up"]
    expect(decisions.nth(0)).to_contain_text("waiting: candidate requests 2000/3000")
    expect(decisions.nth(1).get_by_test_id("decision-test")).to_have_text(
        "difference +1.20 points, interval [-2.10 points, +4.50 points], p(worse) 0.9100")
    decisions.nth(1).get_by_test_id("decision-test").click()  # the full figures open below it
    expect(decisions.nth(1).locator("pre")).to_contain_text('"p_worse": 0.91')
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.errors == []


def test_missing_and_unknown_fields_show_as_a_dash(server, open_page):
    page = open_page(server.url + "/")
    sparse = {"id": "r-8", "status": "paused", "percent": "half", "arms": [{"arm": "control", "requests": 10}],
              "decisions": [{"action": "roll_back", "reason": None, "figures": "not an object"}]}
    page.evaluate(RENDER, [sparse, {"id": "r-9", "arms": "unknown", "decisions": None}])
    panel = page.locator("#rollout-r-8")
    expect(panel.get_by_test_id("rollout-status")).to_have_text("paused")  # an unknown status is shown as it is
    expect(panel.get_by_test_id("rollout-step")).to_have_text("step —")
    expect(panel.get_by_test_id("rollout-percent")).to_have_text("— to the candidate")
    assert panel.get_by_role("progressbar").get_attribute("aria-valuenow") is None  # not "half"
    control = panel.locator('[data-arm="control"]')
    expect(control.get_by_test_id("arm-requests")).to_have_text("10")
    for testid in ("arm-errors", "arm-p50", "arm-p99", "arm-feedback", "arm-accepted", "arm-acceptance", "arm-ci"):
        expect(control.get_by_test_id(testid)).to_have_text("—")
    decision = panel.get_by_test_id("rollout-decision")
    expect(decision).to_have_count(1)
    expect(decision.locator("td").nth(4)).to_have_text("—")  # reason
    expect(decision.locator("td").nth(5)).to_have_text("—")  # figures
    bare = page.locator("#rollout-r-9")
    expect(bare.get_by_test_id("rollout-status")).to_have_text("—")
    expect(bare.get_by_test_id("rollout-arms")).to_have_text("Arms: —")
    expect(bare.get_by_test_id("rollout-decisions")).to_have_text("No decision yet.")
    assert page.errors == []


def test_a_rollout_the_server_does_not_know_hides_its_panel(server, open_page):
    page = open_page(server.url + "/")
    shown = page.evaluate("""async () => {
      const m = await import("/static/rollout.js");
      const slot = document.createElement("div");
      slot.append("stale");
      document.querySelector("main").append(slot);
      await m.showRollout(slot, "999999");
      return { hidden: slot.hidden, children: slot.childNodes.length };
    }""")
    assert shown == {"hidden": True, "children": 0}
    assert page.errors and all("404" in e for e in page.errors), page.errors  # the browser logs the refused request
