"""The alias table in a real browser: aliases made through the API, their history with its actors, and an
activation from the page moving production in the table and in its open history."""
from playwright.sync_api import expect

from tests.conftest import TEST_KEY


def moves_of(page, alias: str):
    return page.locator(f"#alias-history-{alias}").get_by_test_id("alias-move")


def test_the_alias_table_shows_production_and_an_alias_made_through_the_api_with_its_history(
        make_server, weights_copy, open_page):
    srv = make_server(weights_dir=weights_copy).start()
    srv.wait_ready()
    with srv.client() as c:
        assert c.put("/aliases/canary", json={"model": "alt", "public": True, "reason": "alt for the staff"}).status_code == 200
        assert c.put("/aliases/canary", json={"model": "default", "expected_generation": 1,
                                              "reason": "back to default"}).status_code == 200
        api_history = c.get("/aliases/canary/history").json()
    page = open_page(srv.url + "/")
    table = page.get_by_test_id("aliases-table")
    expect(table.get_by_test_id("alias-row")).to_have_count(2)
    production, canary = table.locator('[data-alias="production"]'), table.locator('[data-alias="canary"]')
    expect(production.get_by_test_id("alias-model")).to_have_text("default")
    expect(production.get_by_test_id("alias-public")).to_have_text("yes")
    expect(canary.get_by_test_id("alias-model")).to_have_text("default")
    expect(canary.get_by_test_id("alias-generation")).to_have_text("2")
    expect(canary.get_by_test_id("alias-rollout")).to_have_text("—")
    expect(page.get_by_test_id("rollout-panel")).to_have_count(0)  # no alias shows a rollout

    history = page.locator("#alias-history-canary")
    expect(history).to_be_hidden()
    toggle = canary.get_by_test_id("alias-history-toggle")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(history).to_be_visible()
    expect(canary.get_by_test_id("alias-history-toggle")).to_have_attribute("aria-expanded", "true")
    expect(canary.get_by_test_id("alias-history-toggle")).to_be_focused()  # the row was redrawn; focus stays
    moves = moves_of(page, "canary")
    expect(moves).to_have_count(2)
    # newest first, as the API answers, with the actor and the reason of each move
    assert moves.evaluate_all("rows => rows.map(r => Number(r.dataset.generation))") == \
        [m["generation"] for m in api_history] == [2, 1]
    expect(moves.nth(0).get_by_test_id("move-model")).to_have_text("default")
    expect(moves.nth(0).get_by_test_id("move-previous")).to_have_text("alt")
    expect(moves.nth(0).get_by_test_id("move-actor")).to_have_text("api")
    expect(moves.nth(0)).to_contain_text("back to default")
    expect(moves.nth(1).get_by_test_id("move-model")).to_have_text("alt")
    expect(moves.nth(1).get_by_test_id("move-previous")).to_have_text("—")
    expect(moves.nth(1)).to_contain_text("alt for the staff")
    canary.get_by_test_id("alias-history-toggle").click()
    expect(history).to_be_hidden()
    assert page.errors == []


def test_an_activation_from_the_page_moves_production_in_the_table_and_its_open_history(
        make_server, weights_copy, open_page):
    srv = make_server(weights_dir=weights_copy).start()
    srv.wait_ready()
    page = open_page(srv.url + "/")
    production = page.get_by_test_id("aliases-table").locator('[data-alias="production"]')
    expect(production.get_by_test_id("alias-generation")).to_have_text("0")
    production.get_by_test_id("alias-history-toggle").click()
    moves = moves_of(page, "production")
    expect(moves).to_have_count(1)
    expect(moves.first.get_by_test_id("move-actor")).to_have_text("service")

    page.get_by_test_id("models-table").locator('[data-model="alt"]').get_by_test_id("activate").click()
    expect(page.locator("#key-dialog")).to_be_visible()  # a management call: the page asks for the key
    page.locator("#key-input").fill(TEST_KEY)
    page.locator("#key-ok").click()

    expect(production.get_by_test_id("alias-model")).to_have_text("alt")
    expect(production.get_by_test_id("alias-generation")).to_have_text("1")
    expect(moves).to_have_count(2)  # still open, and asked again
    expect(moves.first.get_by_test_id("move-model")).to_have_text("alt")
    expect(moves.first.get_by_test_id("move-actor")).to_have_text("api")
    expect(moves.nth(1).get_by_test_id("move-model")).to_have_text("default")
    with srv.client() as c:
        assert c.get("/aliases/production").json()["model"] == "alt"
        assert [m["actor"] for m in c.get("/aliases/production/history").json()] == ["api", "service"]
    assert page.errors == []
