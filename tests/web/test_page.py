"""The web page in a real browser: the keypad, training from the form, the model table, the API key prompt."""
import random

import httpx
from playwright.sync_api import expect

from tests.conftest import poll


def suggestion_sequences(page) -> list[list[int]]:
    return [[int(t) for t in s.split(",")] for s in
            page.get_by_test_id("suggestion").evaluate_all("nodes => nodes.map(n => n.dataset.sequence)")]


def test_pressing_7_shows_suggestions_that_match_topk(server, open_page):
    page = open_page(server.url + "/")
    page.get_by_test_id("digit-7").click()
    expect(page.get_by_test_id("prefix")).to_have_text("7")
    expect(page.get_by_test_id("suggestion")).to_have_count(5)
    shown = suggestion_sequences(page)
    assert all(s[0] == 7 for s in shown)
    api = httpx.get(f"{server.url}/topk", params={"start": 7, "k": 5}).json()
    assert shown == [s["sequence"] for s in api["suggestions"]]
    page.get_by_test_id("suggestion").first.click()
    expect(page.get_by_test_id("prediction-sequence")).to_have_text("7 2 8 4 3")
    expect(page.get_by_test_id("attention")).to_be_visible()
    # keyboard digits, backspace and clear
    page.keyboard.press("6")
    expect(page.get_by_test_id("prefix")).to_have_text("76")
    expect(page.get_by_test_id("suggestion").first).to_have_attribute("data-sequence", "7,6,5,2,8")
    assert all(s[:2] == [7, 6] for s in suggestion_sequences(page))
    page.keyboard.press("Backspace")
    expect(page.get_by_test_id("prefix")).to_have_text("7")
    page.get_by_test_id("clear").click()
    expect(page.get_by_test_id("suggestion")).to_have_count(0)
    assert page.errors == []


def test_the_keypad_works_at_phone_width(server, open_page):
    page = open_page(server.url + "/", width=360)
    for d in ("digit-2", "digit-5"):
        page.get_by_test_id(d).click()
    expect(page.get_by_test_id("suggestion").first).to_have_attribute("data-sequence", "2,5,1,8,5")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360
    assert page.errors == []


def test_a_training_job_started_from_the_form_shows_progress_and_ends_in_the_model_table(make_server, open_page):
    srv = make_server(SEQ2SEQ_AUTH="disabled").start()
    srv.wait_ready()
    page = open_page(srv.url + "/")
    form = page.get_by_test_id("train-form")
    form.locator("textarea[name=sequences]").fill("1 2 3 4 5\n1 2 3 4 5\n1 9 9 9 9\n3 3 3 3 3")
    form.locator("input[name=steps]").fill("300")
    form.locator("select[name=activate]").select_option("always")
    form.locator("input[name=name]").fill("from the page")
    form.locator("button[type=submit]").click()
    progress = page.get_by_test_id("job-progress")
    expect(progress).to_be_visible()
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=60_000)
    expect(progress).to_have_attribute("aria-valuenow", "100")
    table = page.get_by_test_id("models-table")
    expect(table.get_by_test_id("model-row")).to_have_count(2)
    job = httpx.get(f"{srv.url}/jobs").json()[0]  # management is open on this server
    new_row = table.locator(f'[data-model="{job["model_id"]}"]')
    expect(new_row).to_contain_text("from the page")
    expect(new_row.get_by_test_id("active-badge")).to_be_visible()
    # a corpus job's calibration is measured and shown: the model's probabilities against the corpus's
    calibration = httpx.get(f"{srv.url}/models/{job['model_id']}").json()["metrics"]["calibration_tv_mean"]
    expect(new_row.get_by_test_id("calibration")).to_contain_text(f"TV {calibration:.3f}")
    expect(table.locator('[data-model="default"]').get_by_test_id("calibration")).to_contain_text("TV 0.000")
    assert page.errors == []


def test_api_errors_appear_next_to_their_field(make_server, open_page):
    server = make_server(SEQ2SEQ_AUTH="disabled").start()
    server.wait_ready()
    page = open_page(server.url + "/")
    form = page.get_by_test_id("train-form")
    form.locator("textarea[name=sequences]").fill("1 2 3 4 5\n1 2 3 4 12")
    form.locator("button[type=submit]").click()
    expect(form.locator('[data-for="dataset"]')).to_contain_text("line 2, item 5: token 12 is outside the vocabulary")
    form.locator("textarea[name=sequences]").fill("1 2 3 4 5")
    form.locator("input[name=steps]").fill("0")
    form.locator("button[type=submit]").click()
    expect(form.locator('[data-for="training.steps"]')).to_contain_text("greater than or equal to 1")
    expect(form.locator("input[name=steps]")).to_have_class("invalid")
    assert httpx.get(f"{server.url}/jobs").json() == []
    # the browser logs the refused requests as console errors; nothing else may appear
    assert all("422" in e for e in page.errors), page.errors


def test_with_an_api_key_the_page_asks_for_it_before_training(make_server, open_page):
    srv = make_server(SEQ2SEQ_API_KEY="page-management-key-0123456789abcdef").start()
    srv.wait_ready()
    page = open_page(srv.url + "/")
    form = page.get_by_test_id("train-form")
    form.locator("input[value=random]").check()
    form.locator("input[name=steps]").fill("20")
    form.locator("button[type=submit]").click()
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("key-where")).to_contain_text("api-key")
    page.locator("#key-input").fill("page-management-key-0123456789abcdef")
    page.locator("#key-ok").click()
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=60_000)
    assert page.evaluate("window.localStorage.length + window.sessionStorage.length") == 0
    assert page.errors == []


def test_a_sampled_corpus_model_shows_its_held_out_figures_beside_the_n_gram(make_server, open_page):
    """A corpus of sampled counts is trained with a held-out part; the table shows what the network gains over
    counting, the same numbers /models gives."""
    rng = random.Random(0)
    sequences = []
    for _ in range(200):
        s = [rng.randrange(10)]
        while len(s) < 5:
            s.append((s[-1] + rng.choice((1, 1, 3))) % 10)
        sequences.append(s)
    srv = make_server(SEQ2SEQ_AUTH="disabled").start()
    srv.wait_ready()
    job = httpx.post(f"{srv.url}/jobs", json={"dataset": {"sequences": sequences}, "training": {"steps": 50},
                                              "activate": "never"}).json()
    done = poll(lambda: (j := httpx.get(f"{srv.url}/jobs/{job['id']}").json())["status"] == "succeeded" and j, 120,
                message="the sampled-corpus job did not succeed")
    metrics = httpx.get(f"{srv.url}/models/{done['model_id']}").json()["metrics"]
    page = open_page(srv.url + "/")
    cell = page.get_by_test_id("models-table").locator(f'[data-model="{done["model_id"]}"]').get_by_test_id("held-out")
    expect(cell).to_contain_text(f"NLL {metrics['heldout_nll']:.2f}")
    expect(cell).to_contain_text(f"n-gram {metrics['baseline_nll']:.2f}")
    expect(page.get_by_test_id("models-table").locator('[data-model="default"]').get_by_test_id("held-out")).to_have_text("")
    assert page.errors == []
