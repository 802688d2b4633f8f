"""The case-work journey (MODEL §6) on the demo incident, as root in Chromium: a verdict
with its reason from an org's page, a tag, the evidence download, then both undone so
the shared demo server is left as it was (the ledger and note history keep them)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

IP = "198.51.100.30"


def test_verdict_tag_and_evidence_from_the_org_page(demo_server, chromium_browser, new_page, watch):
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([demo_server.root_cookie()])
    page = new_page(context)
    org_url = demo_server.workbench + "/orgs/109"
    page.goto(org_url)
    row = page.locator(".forensics-explanations tbody tr", has_text=IP)
    assert "nothing explained it" in row.inner_text()
    row.locator("input[name=reason]").fill("customer confirmed: their office network")
    with page.expect_navigation():
        row.get_by_role("button", name="Explain by verdict").click()
    message = page.locator(".message-info").inner_text()
    assert f"Verdict on {IP}" in message and "3 requests newly explained" in message
    assert "verdict (3)" in page.locator(".forensics-explanations tbody tr", has_text=IP).inner_text()
    assert "customer confirmed: their office network" in page.locator(".forensics-verdicts").inner_text()

    form = page.locator(".forensics-case .forensics-note-form")
    form.locator("input[name=tag]").fill("confirmed")
    form.locator("input[name=text]").fill("<b>their office</b>")
    with page.expect_navigation():
        form.get_by_role("button", name="Add a note or tag").click()
    case = page.locator(".forensics-case")
    assert "confirmed" in case.locator(".forensics-tag").first.inner_text()
    assert "<b>their office</b>" in case.inner_text()  # shown as text, not markup

    link = case.get_by_role("link", name="Download the evidence file for this org")
    assert link.get_attribute("href").endswith("/orgs/109/evidence.html")
    response = page.request.get(demo_server.base + link.get_attribute("href"))
    assert response.status == 200 and "Evidence for" in response.text() and "<script" not in response.text()

    # Undo both: the demo server is shared with the other browser tests.
    with page.expect_navigation():
        page.locator(".forensics-verdicts").get_by_role("button", name="Withdraw").click()
    assert "3 requests no longer explained" in page.locator(".message-info").inner_text()
    with page.expect_navigation():
        page.locator(".forensics-case .forensics-notes").get_by_role("button", name="Delete").click()
    assert page.locator(".forensics-case .forensics-tag").count() == 0
    context.close()
