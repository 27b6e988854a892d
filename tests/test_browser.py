"""The subscriber's pages in a real headless Chromium against `python wsgi.py` under waitress.

Every page is checked as a phone shows it (360 px): Russian, no scripts or inline styles, no
horizontal scrolling, labelled fields, large targets, and no console error or CSP violation.
Every page is also photographed at 360 and 1280 px into SCREENSHOT_DIR.
"""

import base64
import math
import os
import runpy
import time
from decimal import Decimal
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from conftest import ROOT, LiveServer, callback_fields, missing_component
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from gateway.signing import PageTokens, make_link

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOW_TO_INSTALL = "apt-get install -y chromium chromium-driver (Debian's browser and its driver)"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
PHONE, DESKTOP = 360, 1280
SANDBOX = SimpleNamespace(config=runpy.run_path(os.path.join(ROOT, "config.sandbox.py")))
WAIT = 15


def require_browser():
    """Skip without Chromium, saying how to get it; under CI, or asked for screenshots, fail."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return
    message = f"browser tests need {' and '.join(missing)}: {HOW_TO_INSTALL}"
    if os.environ.get("SCREENSHOT_DIR"):  # make screenshots without a browser is an error
        pytest.fail(message)
    missing_component(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    server = LiveServer(tmp_path_factory.mktemp("browser")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    path = os.environ.get("SCREENSHOT_DIR") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(path, exist_ok=True)
    return path


def start_chromium(tmp_path_factory, javascript=True):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    # The driver's path given explicitly keeps Selenium Manager from downloading anything.
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser(server, shots, tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")
        driver = start_chromium(tmp_path_factory)
    yield Browser(driver, server, shots)
    driver.quit()


@pytest.fixture(scope="module")
def browser_without_js(server, shots, tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")
        driver = start_chromium(tmp_path_factory, javascript=False)
    yield Browser(driver, server, shots)
    driver.quit()


class Browser:
    """One Chromium tab shown as a phone, with the checks every page must pass."""

    def __init__(self, driver, server, shots):
        self.driver, self.server, self.shots = driver, server, shots
        self.resize(PHONE, 800)

    def resize(self, width, height):
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})

    def open(self, path_or_url, status=200):
        url = path_or_url if "://" in path_or_url else self.server.url + path_or_url
        self.driver.get(url)
        self.check(status)

    def submit(self, button, status=200):
        """Press a form's button by its words and wait for the page it leads to."""
        self.press(By.XPATH, f"//button[normalize-space()='{button}']", status)

    def follow(self, link_text, status=200):
        self.press(By.LINK_TEXT, link_text, status)

    def press(self, by, what, status):
        page = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(by, what).click()
        gone = expected_conditions.staleness_of(page)
        self.wait_until(lambda: gone(self.driver), f"«{what}» led nowhere")
        self.check(status)

    def type(self, field_id, text):
        field = self.driver.find_element(By.ID, field_id)
        field.clear()
        field.send_keys(text)

    def tab(self):
        """Press Tab; the focused element's words and how its focus ring is drawn."""
        ActionChains(self.driver).send_keys(Keys.TAB).perform()
        return self.driver.execute_script(
            "const el = document.activeElement, style = getComputedStyle(el);"
            "return [el.textContent.trim(), style.outlineStyle, parseFloat(style.outlineWidth)];")

    def find(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def heading(self):
        return self.find("h1")[0].text

    def text(self):
        """The main part's text as shown; WebDriver shows no-break spaces as plain ones."""
        return self.find("main")[0].text

    def check(self, status=200):
        """The page must log nothing but its own expected status, and be fit for a phone."""
        self.wait_until(lambda: self.driver.execute_script("return document.readyState")
                        == "complete", "the page did not finish loading")
        url = self.driver.current_url
        # An error page's own status is the one console error it may have.
        expected = f"{url} - Failed to load resource: the server responded with a status of "
        problems = [entry["message"] for entry in self.driver.get_log("browser")
                    if entry["level"] == "SEVERE"
                    and not entry["message"].startswith(expected + str(status))]
        assert problems == [], f"console errors or CSP violations on {url}"
        facts = self.driver.execute_script(PAGE_FACTS)
        assert facts == {"lang": "ru", "scripts": 0, "inlineStyles": 0, "headings": 1,
                         "overflow": False, "unlabelled": [], "small": [], "lowContrast": []}, url

    def shoot(self, name):
        """The whole page at phone and desktop width, then back to the phone."""
        for width in (PHONE, DESKTOP):
            self.resize(width, 400)
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            self.resize(width, math.ceil(size["height"]))
            png = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
            with open(os.path.join(self.shots, f"{name}-{width}.png"), "wb") as file:
                file.write(base64.b64decode(png["data"]))
        self.resize(PHONE, 800)

    def balance(self):
        """The sandbox cabinet's «Баланс», or None while the cabinet does not show one."""
        self.open("/sandbox/cabinet/")
        shown = self.find("#balance")
        if not shown:
            return None
        return Decimal(shown[0].text.removesuffix("руб.").replace(" ", "").replace(",", "."))

    def wait_until(self, condition, message):
        """Poll a page that may be reloading under us: a read that races the reload retries."""
        WebDriverWait(self.driver, WAIT, poll_frequency=0.2,
                      ignored_exceptions=(WebDriverException,)).until(
            lambda driver: condition(), message)


# What the checks read from the page as a phone shows it. Targets are what a thumb presses;
# contrast is WCAG's ratio of each text's colour to the first opaque background behind it.
PAGE_FACTS = """
const targets = [...document.querySelectorAll('a, button, input:not([type=hidden]), select')];
const rgb = text => text.match(/[\\d.]+/g).map(Number);
const luminance = ([r, g, b]) => {
  const f = c => (c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const behind = el => {
  for (; el; el = el.parentElement) {
    const colour = rgb(getComputedStyle(el).backgroundColor);
    if (colour.length < 4 || colour[3] > 0) return colour;
  }
  return [255, 255, 255];
};
const contrast = el => {
  const [a, b] = [luminance(rgb(getComputedStyle(el).color)), luminance(behind(el))];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
};
const texts = [...document.body.querySelectorAll('*')].filter(el =>
  [...el.childNodes].some(node => node.nodeType === 3 && node.textContent.trim()));
return {
  lowContrast: texts.filter(el => contrast(el) < 4.5).map(el => el.textContent.trim()),
  lang: document.documentElement.lang,
  scripts: document.scripts.length,
  inlineStyles: document.querySelectorAll('[style], style').length,
  headings: document.querySelectorAll('h1').length,
  overflow: document.documentElement.scrollWidth > window.innerWidth,
  unlabelled: [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(el => el.labels.length === 0).map(el => el.name),
  small: targets.filter(el => el.getBoundingClientRect().height < 44)
    .map(el => el.outerHTML.slice(0, 80)),
};
"""


def start_payment(browser, amount):
    """From the sandbox cabinet to the confirmation page for an amount typed there."""
    browser.open("/sandbox/cabinet/")
    browser.type("amount", amount)
    browser.submit("Новый платеж")
    assert browser.heading() == "Платеж в системе ChronoPay" and "Заплатить" in browser.text()
    again = browser.find("input[name=again]")
    if again:  # an earlier test paid this account: paying again is meant here
        again[0].click()


def pay_with(browser, card, status=200):
    """On the simulated ChronoPay page, pay with a test card."""
    browser.type("email", "dem001@example.ru")
    browser.type("card", card)
    browser.type("expiry", "12/30")
    browser.type("cvc", "123")
    browser.submit("Оплатить", status)


def test_paying_card_tops_up_the_account_from_the_cabinet(browser):
    before = browser.balance()
    browser.shoot("01-cabinet")
    browser.submit("Новый платеж")
    assert browser.heading() == "Платеж в системе ChronoPay"
    field = browser.find("#amount")[0]
    assert field.get_attribute("inputmode") == "decimal"
    assert "От 10,00 до 15 000,00 руб." in browser.text()
    browser.shoot("02-amount")

    browser.type("amount", "5")
    browser.submit("Новый платеж", status=422)
    error = browser.find(".field .error")[0]
    assert error.text == "Сумма должна быть от 10,00 до 15 000,00 руб."
    assert error.get_attribute("role") == "alert" and browser.driver.title.startswith("Ошибка")
    field = browser.find("#amount")[0]
    assert field.get_attribute("aria-invalid") == "true"
    assert error.get_attribute("id") in field.get_attribute("aria-describedby").split()
    assert browser.driver.switch_to.active_element == field
    browser.shoot("03-amount-error")
    assert browser.tab() == ["Новый платеж", "solid", 3]

    browser.type("amount", "1 000,50")
    browser.submit("Новый платеж")
    assert [row.text for row in browser.find("table.params tr")] == [
        "Параметр Значение", "Лицевой счет 6", "Сумма 1 000,50 руб."]
    assert "в защищенном режиме (https)" in browser.text()
    assert "электронную почту" in browser.text()
    browser.shoot("04-confirm")

    browser.submit("Заплатить")
    assert browser.driver.current_url.startswith(browser.server.url + "/sandbox/chronopay/?")
    assert "1 000,50 руб." in browser.text()
    browser.shoot("05-chronopay")

    pay_with(browser, "4111 1111 1111 1111")
    assert browser.heading() == "Платеж принят" and "1 000,50 руб." in browser.text()
    browser.shoot("06-accepted")

    browser.follow("Вернуться в личный кабинет")
    assert "Абонент dem001" in browser.heading()
    assert before is not None, "the sandbox cabinet shows no «Баланс»"
    browser.wait_until(lambda: browser.balance() == before + Decimal("1000.50"),
                       "the sandbox billing balance did not rise by 1 000,50")


def test_declined_card_says_the_payment_failed_and_leads_back(browser):
    start_payment(browser, "500")
    browser.submit("Заплатить")
    pay_with(browser, "4000 0000 0000 0002")
    assert browser.heading() == "Платеж не прошел"
    assert "Деньги с карты не списаны" in browser.text()
    browser.shoot("08-failed")
    browser.follow("Вернуться в личный кабинет")
    assert "Абонент dem001" in browser.heading()


def test_back_reload_after_paying_warns_before_paying_again(browser):
    start_payment(browser, "700")
    browser.submit("Заплатить")
    pay_with(browser, "4111 1111 1111 1111")
    assert browser.heading() == "Платеж принят"
    browser.driver.back()  # the simulated ChronoPay page
    browser.driver.back()  # the confirmation page of the link
    browser.driver.refresh()
    browser.check()
    confirm_url = browser.driver.current_url
    assert confirm_url.startswith(browser.server.url + "/pay?")
    assert "Платеж на 700,00 руб. уже принят в" in browser.text()
    assert "Да, я хочу заплатить еще раз" in browser.text()
    warning = browser.find(".warning")[0].location["y"]
    assert warning < browser.find("button[type=submit]")[0].location["y"]
    browser.shoot("13-paid-recently")
    # One careless click does not pay: the tick is required (and checked by the server).
    browser.driver.find_element(By.XPATH, "//button[normalize-space()='Заплатить']").click()
    assert browser.driver.execute_script(
        "return document.querySelector('input[name=again]').validity.valueMissing")
    assert browser.driver.current_url == confirm_url
    browser.find("input[name=again]")[0].click()
    browser.submit("Заплатить")
    assert browser.driver.current_url.startswith(browser.server.url + "/sandbox/chronopay/?")


def test_waiting_page_turns_into_accepted_without_javascript_when_callback_is_late(
        browser_without_js):
    browser = browser_without_js
    start_payment(browser, "300")
    browser.submit("Заплатить")
    query = {key: values[0] for key, values in
             parse_qs(urlsplit(browser.driver.current_url).query).items()}
    # The subscriber is back before ChronoPay has called us.
    browser.open(query["success_url"])
    assert browser.heading() == "Ожидаем подтверждение от ChronoPay"
    assert browser.find('meta[http-equiv="refresh"]')
    browser.shoot("07-waiting")

    fields = callback_fields(SANDBOX, query, transaction_id=str(time.time_ns()))
    answer = requests.post(browser.server.url + "/chronopay/callback", data=fields, timeout=10)
    assert answer.status_code == 200
    browser.wait_until(lambda: browser.driver.title.startswith("Платеж принят"),
                       "the waiting page did not turn into «Платеж принят»")
    browser.check()


def cabinet_link(expires, **tamper):
    query = make_link(SANDBOX.config["CABINET_SECRET"], "dem001", "6", None, int(expires))
    return "/pay?" + urlencode(dict(query, **tamper))


@pytest.mark.parametrize("name, path, status, title", [
    pytest.param("09-expired", lambda: cabinet_link(time.time() - 60), 410, "Ссылка устарела",
                 id="expired-link"),
    pytest.param("10-invalid", lambda: cabinet_link(time.time() + 600, account="7"), 403,
                 "Ссылка недействительна", id="altered-link"),
    pytest.param("11-not-found", lambda: "/pay/nowhere", 404, "Страница не найдена",
                 id="unknown-page"),
    pytest.param("12-unknown-order", lambda: "/pay/success/" + PageTokens(
        SANDBOX.config["SECRET_KEY"], 1800, time.time).dumps("order", "20000101-000000000000"),
        404, "Платеж не найден", id="unknown-order"),
])
def test_error_page_says_what_happened_and_leads_back(browser, name, path, status, title):
    browser.open(path(), status)
    assert browser.heading() == title and browser.driver.title.startswith(title)
    assert "Traceback" not in browser.driver.page_source
    browser.shoot(name)
    browser.follow("Вернуться в личный кабинет")
    assert "Абонент dem001" in browser.heading()


# Words of the sandbox billing's table cut across lines: a range over one word that yields
# more than one line box (or any cell wider than its table).
CUT_WORDS = """
const cut = [];
for (const cell of document.querySelectorAll('table.params td, table.params th')) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    for (const match of node.textContent.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
      if (lines.size > 1) cut.push(match[0]);
    }
  }
}
return cut;
"""


def test_sandbox_billing_keeps_words_whole_and_the_way_back_by_the_card(browser):
    start_payment(browser, "200")
    browser.submit("Заплатить")
    pay_with(browser, "4111 1111 1111 1111")
    # Not browser.open: the sandbox billing is an operator's page, not held to the phone rules.
    browser.driver.get(browser.server.url + "/sandbox/billing/")
    browser.wait_until(lambda: browser.find("table.params td"), "no sandbox billing page")
    assert browser.find("table.params td"), "no events in the sandbox billing table"
    for width in (PHONE, DESKTOP):
        browser.resize(width, 800)
        assert browser.driver.execute_script(CUT_WORDS) == [], width
        assert not browser.driver.execute_script(
            "return document.documentElement.scrollWidth > window.innerWidth"), width
    browser.resize(DESKTOP, 1400)  # a window much taller than the card
    browser.open(cabinet_link(time.time() + 600))  # the amount page
    card = browser.find(".card")[0].rect
    back = browser.find("footer.bottom a")[0].rect
    assert browser.find("footer.bottom a")[0].text == "Вернуться в личный кабинет"
    assert back["y"] - (card["y"] + card["height"]) < 100, "the way back is far below the card"
    browser.resize(PHONE, 800)
