"""The page's script is ES modules served as they are: each one loads, with a JavaScript type, and none errs."""
import httpx
from playwright.sync_api import expect

from app.http.routes.pages import STATIC


def test_the_page_loads_as_es_modules_with_no_console_errors(server, open_page):
    page = open_page(server.url + "/")
    expect(page.get_by_test_id("ready")).to_contain_text("model default")  # models.js ran after main.js imported it
    expect(page.get_by_test_id("model-row").first).to_be_visible()
    page.get_by_test_id("digit-7").click()  # keypad.js -> predict.js -> api.js
    expect(page.get_by_test_id("suggestion")).to_have_count(5)
    scripts = page.evaluate("[...document.scripts].map((s) => [s.type, s.getAttribute('src')])")
    assert scripts == [["module", "/static/main.js"]]
    assert page.evaluate("typeof refreshModels") == "undefined"  # module scope: nothing leaks onto window
    loaded = page.evaluate("performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname)"
                           ".filter((p) => p.endsWith('.js'))")
    modules = {f"/static/{p.name}" for p in STATIC.glob("*.js")}
    assert set(loaded) == modules  # every module file is imported from main.js; none is left behind or missing
    for path in sorted(modules):
        response = httpx.get(server.url + path)
        assert response.status_code == 200, path
        # browsers refuse a module script served with a non-JavaScript type
        assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript"), path
    assert page.errors == []
