#!/usr/bin/env python3
"""A real browser through the sign-in page: headless Chromium driven by
Selenium, against a running gateway (tests/suite/signin.rs starts it).

    python3 tests/common/browser_signin.py BASE_URL EMAIL PASSWORD

Opens a protected page, lands on the sign-in page, gets a wrong password
refused with the alert, signs in, is back on the protected page with the
upstream seeing the identity, checks the page's inline style applied under
its CSP (a hash that didn't match would leave it unstyled), signs out with
the sign-out button, and is sent to sign in again. Exits 0 and prints `ok`,
or raises. Needs the `chromium` and `chromium-driver` Debian packages and
PyPI `selenium` (.ci/run installs them).
"""

import shutil
import sys
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 30


def start_browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        sys.exit(f"browser could not start: chromium={chromium} chromedriver={driver_path}; install the "
                 "Debian packages chromium and chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--window-size=1024,768"]:
        options.add_argument(arg)
    # Both paths given: Selenium Manager has nothing to look up or download.
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def path_of(url):
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def sign_in(driver, email, password):
    wait = WebDriverWait(driver, WAIT)
    field = wait.until(ec.presence_of_element_located((By.ID, "email")))
    field.clear()
    field.send_keys(email)
    driver.find_element(By.ID, "password").send_keys(password)
    button = driver.find_element(By.CSS_SELECTOR, "button[type=submit]")
    button.click()
    # The answer is a new page: wait until this one is gone, so nothing after
    # this reads (or types into) the old page on a slow machine.
    wait.until(ec.staleness_of(button))


def main():
    base, email, password = sys.argv[1:4]
    driver = start_browser()
    driver.set_page_load_timeout(WAIT)
    wait = WebDriverWait(driver, WAIT)
    try:
        protected = "/debug/echo/any/browser?x=1"
        driver.get(base + protected)
        wait.until(lambda d: urlsplit(d.current_url).path == "/signin")
        assert "rd=" in driver.current_url, driver.current_url

        # The page's own style applied: its CSP hash matches.
        max_width = driver.execute_script("return getComputedStyle(document.querySelector('main')).maxWidth")
        assert max_width == "352px", f"the inline style was blocked: max-width {max_width}"

        sign_in(driver, email, "not-the-password")
        alert = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[role=alert]")))
        wait.until(lambda d: alert.text.strip() != "")
        assert "email or password is wrong" in alert.text, alert.text
        assert urlsplit(driver.current_url).path == "/signin", driver.current_url

        sign_in(driver, email, password)
        wait.until(lambda d: path_of(d.current_url) == protected)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert email in body and "x-auth-email" in body, body

        driver.get(base + "/signin/out")
        button = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]")))
        button.click()
        wait.until(ec.staleness_of(button))
        wait.until(lambda d: urlsplit(d.current_url).path == "/signin")

        driver.get(base + protected)
        wait.until(lambda d: urlsplit(d.current_url).path == "/signin")
        print("ok")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
