"""The staff checkout page in a real headless Chromium, against `edge serve` and Mosquitto.

Customers and the cashier account are seeded through the edge's own CLI before the edge
starts; coupons and member codes are signed by the `issuer` fixture, as the shopper app
signs them. The scanner is the keyboard: it types into whatever has the focus and presses
Enter, so these tests also prove that the scan field keeps the focus.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, expect

from edge.settings import Settings
from tests import browser as chromium
from tests.conftest import EdgeProc, Issuer, edge_cli, edge_env, wait_until

# The shared browser fixtures, bound here so pytest finds them for this module.
playwright, browser, page = chromium.playwright, chromium.browser, chromium.page

CASHIER = "carla"
CASHIER_PW = "cashier-password-1"
MANAGER = "mia"
MANAGER_PW = "manager-password-1"
CARD = "4000123412341234"
ANNA = {"id": "c-1", "display_name": "Anna", "tier": "gold", "points": 120, "card": CARD,
        "phone": "+4915123456789"}
BEN = {"id": "c-2", "display_name": "Ben", "tier": "silver", "points": 40,
       "card": "4000 5555 6666 7777", "phone": "+49 160 5550199"}
COFFEE, MILK = "8000070", "5000169"
PRODUCTS = ("sku,name,price,categories\n"
            f"{COFFEE},Coffee beans 500 g,7.99,coffee;pantry\n"
            f"{MILK},Milk 1 l,1.49,dairy\n"
            "4000400,Apples loose,2.49,fruit\n")


def edge_command(settings: Settings, *args: str, stdin: str | None = None) -> None:
    done = subprocess.run([*edge_cli(), *args], env=edge_env(settings), input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"edge {' '.join(args)} failed:\n{done.stderr}"


@pytest.fixture
def seeded(settings: Settings, tmp_path: Path) -> None:
    """Anna in the customer cache, a cashier and a manager account and the POS lane lane-2,
    written before the edge starts."""
    customers = tmp_path / "customers.jsonl"
    customers.write_text(json.dumps(ANNA) + "\n" + json.dumps(BEN) + "\n")
    edge_command(settings, "customers", "import", str(customers))
    products = tmp_path / "products.csv"
    products.write_text(PRODUCTS)
    edge_command(settings, "products", "import", str(products))
    edge_command(settings, "staff", "add", CASHIER, "--role", "cashier", "--password-stdin",
                 stdin=CASHIER_PW + "\n")
    edge_command(settings, "staff", "add", MANAGER, "--role", "manager", "--password-stdin",
                 stdin=MANAGER_PW + "\n")
    edge_command(settings, "devices", "add", "pos", "lane-2")


@pytest.fixture
def checkout_edge(settings: Settings, seeded: None,
                  edge_process: EdgeProc) -> str:
    """The seeded edge, running and connected to its broker; its base URL."""
    base = f"http://127.0.0.1:{edge_process.http_port}"
    assert wait_until(
        lambda: requests.get(f"{base}/healthz", timeout=2).json()["broker"]["connected"], 15), \
        "the edge process did not connect to the test broker"
    return base


@pytest.fixture
def till(page: Page, checkout_edge: str) -> Iterator[Page]:
    """The checkout page, signed in as the cashier; fails the test on any script error."""
    script_errors: list[str] = []
    page.on("pageerror", lambda err: script_errors.append(str(err)))
    sign_in(page, checkout_edge)
    yield page
    assert script_errors == []


def sign_in(page: Page, base: str, user: str = CASHIER, password: str = CASHIER_PW,
            path: str = "/staff/checkout") -> None:
    page.goto(f"{base}{path}")
    expect(page).to_have_url(f"{base}/staff/login?next={path.replace('=', '%3D')}")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}{path}")
    expect(page.locator("#scan")).to_be_focused()


def scanner(page: Page, code: str) -> None:
    """What a USB scanner does: type into the focused field, then Enter."""
    page.keyboard.type(code)
    page.keyboard.press("Enter")


def basket_total(page: Page, amount: str) -> None:
    field = page.get_by_label("Basket total")
    field.fill(amount)
    field.press("Enter")
    expect(page.locator("#scan")).to_be_focused()


def coupons(page: Page) -> Locator:
    return page.locator("#coupons li")


def refused_each(page: Page, field: Locator, button: str,
                 cases: list[tuple[str, str]]) -> None:
    """Each value typed into `field` and sent with `button` is refused with its sentence,
    and stays in the field (nothing typed is lost)."""
    for typed, sentence in cases:
        field.fill(typed)
        page.get_by_role("button", name=button).click()
        expect(page.get_by_role("alert")).to_have_text(sentence)
        expect(field).to_have_value(typed)


def cashier_cannot_approve_undo(till: Page) -> Locator:
    """Undo last sale opens the manager approval dialog; the cashier's own name and password
    there are refused in words. The dialog, still open."""
    till.get_by_role("button", name="Undo last sale").click()
    dialog = till.get_by_role("dialog", name="Manager approval")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Manager user name").fill(CASHIER)
    dialog.get_by_label("Manager password").fill(CASHIER_PW)
    dialog.get_by_role("button", name="Approve").click()
    expect(dialog.locator("#approval-error")).to_have_text(
        f"{CASHIER} is not a manager: only a manager can approve this.")
    return dialog


def forge(token: str) -> str:
    """The same coupon with one character of its signature changed."""
    header, claims, signature = token.split(".")
    i = len(signature) // 2
    return f"{header}.{claims}.{signature[:i]}{'B' if signature[i] == 'A' else 'A'}" \
           f"{signature[i + 1:]}"


def test_cashier_identifies_shopper_redeems_coupon_and_it_cannot_be_used_again(
        till: Page, issuer: Issuer) -> None:
    coupon = issuer.coupon()
    scanner(till, CARD)
    customer = till.locator("#customer")
    expect(customer).to_contain_text("Anna")
    expect(customer).to_contain_text("gold")
    expect(customer).to_contain_text("120 points")

    basket_total(till, "20.00")
    scanner(till, coupon)
    expect(coupons(till)).to_have_count(1)
    expect(coupons(till).first).to_contain_text("€2.00")
    expect(till.locator("#to-pay")).to_have_text("€18.00")
    expect(till.get_by_role("alert")).to_be_hidden()

    till.get_by_role("button", name="Redeem").click()
    expect(till.locator("#sale-state")).to_have_text("redeemed")
    expect(till.get_by_role("status")).to_have_text(
        "Redeemed: 1 coupon, €2.00 off. To pay €18.00.")
    expect(till.locator("#scan")).to_be_focused()

    till.get_by_role("button", name="New sale").click()
    expect(till.locator("#sale-state")).to_have_text("open")
    expect(coupons(till)).to_have_count(0)
    basket_total(till, "20.00")
    scanner(till, coupon)
    refusal = till.get_by_role("alert")
    expect(refusal).to_be_visible()
    expect(refusal).to_have_text(re.compile(r"^Coupon already used at "))
    expect(coupons(till)).to_have_count(0)
    expect(till.locator("#scan")).to_be_focused()


def test_coupon_below_minimum_spend_says_how_much_more(till: Page, issuer: Issuer) -> None:
    basket_total(till, "20,00")
    scanner(till, issuer.coupon(min_minor=5000))
    refusal = till.get_by_role("alert")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("Spend €30.00 more")
    expect(coupons(till)).to_have_count(0)


def test_forged_coupon_is_refused_and_the_next_scan_still_works(till: Page,
                                                               issuer: Issuer) -> None:
    basket_total(till, "20.00")
    scanner(till, forge(issuer.coupon()))
    refusal = till.get_by_role("alert")
    expect(refusal).to_have_text("This coupon is not genuine: do not accept it.")
    expect(coupons(till)).to_have_count(0)

    scanner(till, issuer.coupon(disc={"kind": "amount", "value_minor": 500, "currency": "EUR"}))
    expect(coupons(till)).to_have_count(1)
    expect(coupons(till).first).to_contain_text("€5.00")
    expect(refusal).to_be_hidden()


def test_undone_coupon_can_be_applied_in_another_sale(till: Page, checkout_edge: str,
                                                      issuer: Issuer, browser: Browser) -> None:
    coupon = issuer.coupon()
    # A second lane, where a manager works (a cashier's sign-in belongs to one lane).
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(chromium.TIMEOUT_MS)
    other = context.new_page()
    sign_in(other, checkout_edge, MANAGER, MANAGER_PW, "/staff/checkout?lane=lane-2")
    expect(other.locator("h1")).to_have_text("Checkout lane-2")

    scanner(till, issuer.member("c-1"))
    expect(till.locator("#customer")).to_contain_text("Anna")
    basket_total(till, "20.00")
    scanner(till, coupon)
    expect(coupons(till)).to_have_count(1)

    basket_total(other, "30.00")
    scanner(other, coupon)
    expect(other.get_by_role("alert")).to_have_text(
        re.compile(r"^This coupon is being used on staff-web right now"))

    expect(till.get_by_label("Basket total")).not_to_be_editable()
    till.get_by_role("button", name="Undo coupon").click()
    expect(coupons(till)).to_have_count(0)
    expect(till.get_by_role("status")).to_contain_text("Coupon taken off")
    expect(till.get_by_label("Basket total")).to_be_editable()
    expect(till.locator("#scan")).to_be_focused()

    scanner(other, coupon)
    expect(coupons(other)).to_have_count(1)
    expect(coupons(other).first).to_contain_text("€3.00")
    expect(other.get_by_role("alert")).to_be_hidden()
    context.close()


def test_voiding_a_redeemed_sale_needs_a_manager_and_gives_the_coupon_back(
        till: Page, issuer: Issuer, tmp_path: Path) -> None:
    shots = tmp_path
    coupon = issuer.coupon()
    basket_total(till, "20.00")
    scanner(till, coupon)
    expect(coupons(till)).to_have_count(1)
    till.get_by_role("button", name="Redeem").click()
    expect(till.locator("#sale-state")).to_have_text("redeemed")

    # A completed sale is undone only with a manager's approval, typed on this screen.
    dialog = cashier_cannot_approve_undo(till)
    dialog.get_by_label("Manager user name").fill(MANAGER)
    dialog.get_by_label("Manager password").fill("not-her-password")
    dialog.get_by_role("button", name="Approve").click()
    expect(dialog.locator("#approval-error")).to_contain_text("Wrong manager name or password")
    expect(dialog.get_by_label("Manager password")).to_have_value("")
    dialog.get_by_label("Manager password").fill(MANAGER_PW)
    till.screenshot(path=str(shots / "approval-dialog.png"))
    dialog.get_by_role("button", name="Approve").click()
    expect(dialog).to_be_hidden()
    expect(till.locator("#sale-state")).to_have_text("voided")
    expect(till.get_by_role("status")).to_contain_text("voided: 1 coupon given back.")
    expect(till.get_by_role("button", name="Undo last sale")).to_be_hidden()

    till.get_by_role("button", name="New sale").click()
    basket_total(till, "20.00")
    scanner(till, coupon)
    expect(coupons(till)).to_have_count(1)
    expect(coupons(till).first).to_contain_text("€2.00")
    expect(till.get_by_role("alert")).to_be_hidden()


def test_checkout_actions_need_the_csrf_token_and_a_session(till: Page,
                                                            checkout_edge: str) -> None:
    scan_url = f"{checkout_edge}/staff/checkout/scan"
    body = {"txn": "web-test-1", "code": CARD}

    # The session cookie alone does not do: another site could make the browser send it.
    refused = till.request.post(scan_url, data=body)
    assert refused.status == 400
    assert "CSRF" in refused.json()["error"]["message"]

    token = till.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    accepted = till.request.post(scan_url, data=body, headers={"X-CSRFToken": token})
    assert accepted.status == 200
    answer = accepted.json()
    assert answer["action"] == "identify"
    assert answer["reply"]["ok"] is True
    assert answer["reply"]["data"]["customer"]["display_name"] == "Anna"

    # Signed out: the JSON actions answer 401, the page sends to the sign-in.
    anonymous = requests.post(scan_url, json=body, timeout=5, allow_redirects=False)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    page_answer = requests.get(f"{checkout_edge}/staff/checkout", timeout=5,
                               allow_redirects=False)
    assert page_answer.status_code == 302
    assert page_answer.headers["Location"].endswith("/staff/login?next=/staff/checkout")


def test_lane_must_be_a_device_id(checkout_edge: str) -> None:
    answer = requests.post(f"{checkout_edge}/staff/checkout/scan?lane=Lane_4",
                           json={"txn": "web-test-2", "code": CARD},
                           auth=(CASHIER, CASHIER_PW), timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"]["detail"] == {"field": "lane"}
    unknown = requests.post(f"{checkout_edge}/staff/checkout/scan?lane=lane-4",
                            json={"txn": "web-test-2", "code": CARD},
                            auth=(CASHIER, CASHIER_PW), timeout=5)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"].startswith("There is no lane lane-4 at this store")


def test_a_cashier_stays_on_the_lane_they_opened(till: Page, checkout_edge: str) -> None:
    till.goto(f"{checkout_edge}/staff/checkout?lane=lane-2")
    expect(till.locator("body")).to_contain_text(
        "You are signed in at lane staff-web and can only work on that lane, not on lane-2.")


# ---------------------------------------------------------------- issue 13: items 2, 3, 7


def placeholder_fits(page: Page, selector: str) -> tuple[float, float]:
    """(width of the field's placeholder text, room for text in the field), in pixels."""
    sizes: list[float] = page.eval_on_selector(selector, """el => {
        const ph = getComputedStyle(el, "::placeholder");
        const ctx = document.createElement("canvas").getContext("2d");
        ctx.font = ph.fontStyle + " " + ph.fontWeight + " " + ph.fontSize + " " + ph.fontFamily;
        const cs = getComputedStyle(el);
        return [ctx.measureText(el.placeholder).width,
                el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight)];
    }""")
    return sizes[0], sizes[1]


@pytest.mark.parametrize("code", ["+49 151 23456789", "0151 23456789", "4000 1234 1234 1234"])
def test_phone_numbers_and_spaced_cards_identify_without_a_total(till: Page, code: str) -> None:
    expect(till.get_by_label("Basket total")).to_have_value("")
    scanner(till, code)
    expect(till.locator("#customer")).to_contain_text("Anna")
    expect(till.get_by_role("alert")).to_be_hidden()
    expect(till.get_by_role("status")).to_have_text("Customer: Anna.")
    expect(till.locator("#scan")).to_be_focused()


@pytest.mark.parametrize("width", [1100, 800])
def test_the_scan_fields_placeholder_is_not_cut_off(till: Page, width: int) -> None:
    till.set_viewport_size({"width": width, "height": 700})
    text, room = placeholder_fits(till, "#scan")
    assert 0 < text <= room, (text, room)


def test_a_second_shoppers_card_asks_before_replacing(till: Page, tmp_path: Path) -> None:
    scanner(till, CARD)
    expect(till.locator("#customer")).to_contain_text("Anna")
    scanner(till, BEN["card"])
    question = till.get_by_role("dialog", name="Another shopper?")
    expect(question).to_be_visible()
    expect(question).to_contain_text(
        "Anna is on this sale. Replace them with the shopper of this loyalty card?")
    till.screenshot(path=str(tmp_path / "replace.png"))
    question.get_by_role("button", name="Keep").click()
    expect(question).to_be_hidden()
    expect(till.locator("#customer")).to_contain_text("Anna")
    expect(till.get_by_role("status")).to_have_text("Anna stays on the sale.")
    expect(till.get_by_role("alert")).to_be_hidden()
    expect(coupons(till)).to_have_count(0)  # never read as a coupon
    expect(till.locator("#scan")).to_be_focused()

    scanner(till, CARD)  # the same shopper again: no question
    expect(question).to_be_hidden()
    expect(till.get_by_role("status")).to_have_text("Customer: Anna.")

    scanner(till, "0160 5550199")  # Ben by phone
    expect(question).to_contain_text("shopper of this phone number?")
    question.get_by_role("button", name="Replace shopper").click()
    expect(till.locator("#customer")).to_contain_text("Ben")
    expect(till.get_by_role("status")).to_have_text("Customer: Ben.")


def test_an_item_bound_coupon_is_redeemed_on_scanned_and_typed_items(
        till: Page, issuer: Issuer) -> None:
    # A next-visit coupon for coffee: €2.00 off, only on the coffee.
    coupon = issuer.coupon(skus=[COFFEE], stack=True, disc={"kind": "amount", "value_minor": 200,
                                                 "currency": "EUR"})
    dairy = issuer.coupon(cats=["dairy"], stack=True)  # 10 % off dairy
    scanner(till, MILK)
    expect(till.locator("#lines tbody tr")).to_have_count(1)
    expect(till.get_by_role("status")).to_have_text("Added: 1 × Milk 1 l, €1.49 each.")
    till.get_by_label("Product code").fill(MILK)
    till.get_by_label("Quantity").fill("2")
    till.get_by_role("button", name="Add item").click()
    expect(till.locator("#lines tbody tr").first).to_contain_text("3")
    expect(till.locator("#scan")).to_be_focused()
    # Without coffee in the basket the coffee coupon is refused, as at a lane.
    scanner(till, coupon)
    expect(till.get_by_role("alert")).to_contain_text("None of the items in this basket")
    scanner(till, COFFEE)
    expect(till.locator("#lines tbody tr")).to_have_count(2)
    expect(till.get_by_label("Basket total")).to_have_value("12.46")
    scanner(till, coupon)
    expect(coupons(till)).to_have_count(1)
    expect(coupons(till).first).to_contain_text("€2.00")
    scanner(till, dairy)
    expect(coupons(till)).to_have_count(2)
    expect(coupons(till).nth(1)).to_contain_text("€0.45")  # 10 % of 3 × €1.49
    # One more coffee: the coupons are priced again on the new basket.
    scanner(till, COFFEE)
    expect(till.locator("#basket-total")).to_have_text("€20.45")
    expect(till.locator("#to-pay")).to_have_text("€18.00")
    till.get_by_role("button", name="Redeem").click()
    expect(till.locator("#sale-state")).to_have_text("redeemed")
    expect(till.get_by_role("status")).to_have_text(
        "Redeemed: 2 coupons, €2.45 off. To pay €18.00.")
    expect(till.get_by_role("alert")).to_be_hidden()


def test_unknown_product_and_bad_lines_say_what_to_do_and_keep_what_was_typed(
        till: Page, checkout_edge: str) -> None:
    code, qty = till.get_by_label("Product code"), till.get_by_label("Quantity")
    code.fill("999999")
    till.get_by_role("button", name="Add item").click()
    expect(till.get_by_role("alert")).to_have_text(
        "This store's product list has no product with that code: enter the item by "
        "category and amount.")
    expect(code).to_have_value("999999")  # nothing lost
    code.fill(MILK)
    refused_each(till, qty, "Add item", [
        ("0", "The quantity must be at least 1."),
        ("-2", "The quantity must be at least 1."),
        ("two", "Type the quantity as a whole number, e.g. 2.")])
    expect(till.locator("#lines tbody tr")).to_have_count(0)
    # The unknown product by category and amount instead.
    till.get_by_label("Category").select_option("fruit")
    amount = till.get_by_label("Price each")
    refused_each(till, amount, "Add by category", [
        ("25000", "That is more than €10,000.00 for one item: check the amount."),
        ("0", "Type the item's price: it must be more than 0."),
        ("abc", "'abc' is not an amount: type the item's price like 2.49.")])
    amount.fill("2,50")
    till.get_by_label("Qty", exact=True).fill("2")
    till.get_by_role("button", name="Add by category").click()
    expect(till.get_by_role("alert")).to_be_hidden()
    row = till.locator("#lines tbody tr")
    expect(row).to_have_count(1)
    expect(row.first).to_contain_text("fruit")
    expect(row.first).to_contain_text("€5.00")
    expect(amount).to_have_value("")
    # A category the store does not have (the page only offers known ones).
    answer = requests.post(f"{checkout_edge}/staff/checkout/item?lane=staff-web",
                           json={"cat": "toys", "amount": "5.00"},
                           auth=(CASHIER, CASHIER_PW), timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == \
        "This store has no category 'toys': pick one from the list."
    # What /scan makes of a code, as a script sees it (HTTP Basic: the lane staff-web).
    def scan(**body: object) -> requests.Response:
        return requests.post(f"{checkout_edge}/staff/checkout/scan?lane=staff-web",
                             json={"txn": "web-http-1", **body},
                             auth=(CASHIER, CASHIER_PW), timeout=5)

    assert scan(code=MILK).json()["line"] == {
        "sku": MILK, "qty": 1, "unit_minor": 149, "categories": ["dairy"], "name": "Milk 1 l"}
    asked = scan(code="0160/5550199", customer_on_sale=True).json()
    assert asked == {"action": "confirm_replace", "kind": "phone", "what": "phone number"}
    who = scan(code="0160/5550199").json()
    assert (who["action"], who["kind"], who["reply"]["data"]["customer"]["id"]) == \
        ("identify", "phone", "c-2")
    bad = scan(code="+49 123")
    assert (bad.status_code, bad.json()["error"]["message"]) == (
        400, "That is not a valid phone number for DE; type it with its +country code.")


def test_undo_last_sale_is_about_the_last_sale_and_not_beside_an_open_one(
        till: Page, issuer: Issuer) -> None:
    last = till.get_by_role("region", name="Last sale")
    undo = till.get_by_role("button", name="Undo last sale")
    expect(undo).to_be_hidden()
    basket_total(till, "20.00")
    scanner(till, issuer.coupon())
    till.get_by_role("button", name="Redeem").click()
    expect(till.locator("#sale-state")).to_have_text("redeemed")
    expect(last).to_be_visible()
    expect(last).to_contain_text("to pay was €18.00")
    expect(last.get_by_role("button", name="Undo last sale")).to_be_visible()
    expect(till.locator("#sale .actions").get_by_role("button", name="Undo last sale")) \
        .to_have_count(0)
    # The next sale under way: the undo is gone, so it cannot be taken for this sale's.
    scanner(till, CARD)
    expect(till.locator("#sale-state")).to_have_text("open")
    expect(undo).to_be_hidden()
    till.get_by_role("button", name="New sale").click()
    expect(undo).to_be_visible()  # nothing under way again
