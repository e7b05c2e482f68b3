"""The Learning card in a real browser: production's policy, the current cycle with its job, acceptance per model
drawn from real feedback, and a cycle's outcome once it ends."""
import httpx
from playwright.sync_api import expect

from tests.conftest import poll


def feedback(url: str, session: str, typed: list[int]) -> None:
    answer = httpx.get(f"{url}/topk", params={"start": typed[0], "k": 3}, headers={"X-Session-ID": session}).json()
    shown = [s["sequence"] for s in answer["suggestions"]]
    r = httpx.post(f"{url}/feedback", json={"impression": answer["impression"],
                                             "accepted": typed if typed in shown else None, "typed": typed})
    assert r.status_code == 202, r.text


def test_the_card_shows_the_policy_the_current_cycle_acceptance_and_the_last_outcome(make_server, open_page):
    srv = make_server(SEQ2SEQ_JOB_WORKERS="0", SEQ2SEQ_LEARNING_CHECK_S="0.2").start()  # nothing trains: it stays queued
    srv.wait_ready()
    for i in range(8):  # half take the first suggestion, half type what the model does not show
        feedback(srv.url, f"user-{i}", [7, 2, 8, 4, 3] if i % 2 else [3, 0, 0, 1, 1])
    page = open_page(srv.url + "/")
    card = page.get_by_test_id("learning-card")
    expect(card.get_by_test_id("learning-policy")).to_contain_text("Off for production")
    expect(card.get_by_test_id("learning-current")).to_have_text("No cycle is running.")
    expect(card.get_by_test_id("learning-outcomes")).to_contain_text("No cycle has ended yet")
    expect(card.get_by_test_id("acceptance-model")).to_have_count(1)
    expect(card.locator('[data-testid="acceptance-model"][data-model="default"]')).to_contain_text("50.0% of 8")

    with srv.client() as c:
        assert c.put("/learning", json={"enabled": True, "min_feedback": 500}).status_code == 200
        first = c.post("/learning/run", json={}).json()
        expect(card.get_by_test_id("learning-policy")).to_contain_text("a cycle after 500 new events", timeout=10_000)
        expect(card.get_by_test_id("learning-current")).to_contain_text("cycle #1", timeout=10_000)
        expect(card.get_by_test_id("learning-current")).to_contain_text(f"job {first['job_id']}: queued")
        assert c.post(f"/jobs/{first['job_id']}/cancel").status_code == 200  # the cycle ends with its job
        poll(lambda: c.get(f"/learning/cycles/{first['id']}").json()["status"] == "ended", 10)
        assert c.post("/learning/run", json={}).status_code == 202  # a second cycle: the current one
    outcome = card.get_by_test_id("learning-outcome")
    expect(outcome).to_have_count(1, timeout=10_000)
    expect(outcome).to_have_attribute("data-outcome", "cancelled")
    expect(outcome).to_contain_text(f"its job {first['job_id']} was cancelled")
    expect(card.get_by_test_id("learning-current")).to_contain_text("cycle #2")
    assert page.errors == []
