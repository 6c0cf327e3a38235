"""Drives the framefusion web console in headless chromium (selenium + chromium-driver).

Usage: console.py BASE_URL USER PASSWORD JOB_FILE TARGET SCREENSHOT_DIR

Logs in, submits the job to TARGET, watches the run finish, opens an error row, opens the
shot browser and waits for every thumbnail to be decoded by the page, opens a larger
preview, filters, and (for a cluster target) opens the cluster view. Prints what it saw as
JSON on its last line; exits non-zero with a message when something is not as it should be.
"""
import json
import os
import sys

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

base, user, password, job_file, target, shots = sys.argv[1:7]
job = open(job_file).read()
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
            "--disable-gpu", "--user-data-dir=" + os.path.join(shots, ".profile-" + target)]:
    options.add_argument(arg)
driver = webdriver.Chrome(options=options,
                          service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")))
seen = {}


def wait(seconds, condition, what):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: condition(d))
    except TimeoutException:
        driver.save_screenshot(os.path.join(shots, f"failed-{target}.png"))
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error") if e.text]
        sys.exit(f"timed out after {seconds} s waiting for {what}; errors on the page: {errors}")


def images_decoded(selector):
    """How many of the images are decoded with a non-empty picture, and how many in all."""
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll(arguments[0])];"
        "return [imgs.filter(i => i.dataset.loaded === 'true' && i.complete && i.naturalWidth > 0"
        " && i.naturalHeight > 0).length, imgs.length,"
        " imgs.filter(i => i.dataset.loaded === 'error').length];", selector)


try:
    driver.get(base + "/")
    wait(20, lambda d: d.find_elements(By.ID, "login-form"), "the login form")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-button").click()
    wait(20, lambda d: d.find_elements(By.ID, "runs"), "the runs page after logging in")

    driver.get(base + "/#/submit")
    wait(20, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#target option")) > 0, "the targets")
    driver.execute_script("document.getElementById('sql').value = arguments[0];", job)
    Select(driver.find_element(By.ID, "target")).select_by_value(target)
    driver.save_screenshot(os.path.join(shots, f"console-submit-{target}.png"))
    driver.find_element(By.ID, "submit-button").click()
    wait(30, lambda d: d.find_elements(By.ID, "run-status"), "the run page")
    seen["run_id"] = driver.find_element(By.ID, "run").get_attribute("data-id")
    statuses = set()

    def finished(d):
        # read in one script call: the page re-renders the run every second
        text = d.execute_script("const e = document.getElementById('run-status'); return e ? e.textContent : null;")
        if text is None:
            return None
        statuses.add(text)
        return text if text in ("succeeded", "failed", "cancelled") else None

    status = wait(600, finished, "the run to finish")
    seen["statuses"] = sorted(statuses)
    if status != "succeeded":
        sys.exit(f"the run ended {status}: {driver.find_element(By.ID, 'run').text}")
    seen["progress"] = driver.find_element(By.ID, "run-progress").text
    seen["summary"] = json.loads(driver.find_element(By.ID, "run-summary").text)
    seen["operators"] = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#run-operators tr")][1:]

    # the error rows: open one
    wait(60, lambda d: d.find_elements(By.CSS_SELECTOR, "tr.error-row"), "the error rows")
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.error-row")
    seen["error_rows"] = len(rows)
    rows[0].click()
    detail = wait(10, lambda d: d.find_element(By.ID, "error-detail") if d.find_element(By.ID, "error-detail").is_displayed() else None,
                  "the error row's message")
    seen["error_detail"] = detail.text
    driver.save_screenshot(os.path.join(shots, f"console-run-{target}.png"))

    # the run is in the list
    driver.get(base + "/#/runs")
    wait(20, lambda d: d.find_elements(By.CSS_SELECTOR, f"tr.run[data-id='{seen['run_id']}']"), "the run in the list")
    seen["listed_status"] = driver.find_element(By.CSS_SELECTOR, f"tr.run[data-id='{seen['run_id']}']").get_attribute("data-status")
    driver.save_screenshot(os.path.join(shots, f"console-runs-{target}.png"))

    # the shot browser: every thumbnail decoded by the page
    driver.get(base + f"/#/run/{seen['run_id']}")
    wait(20, lambda d: d.find_elements(By.ID, "shots-link"), "the shots link")
    driver.find_element(By.ID, "shots-link").click()
    wait(60, lambda d: d.find_elements(By.CSS_SELECTOR, ".clip img.sheet"), "the clips")
    seen["clips_info"] = driver.find_element(By.ID, "clips-info").text
    decoded = wait(300, lambda d: (lambda c: c if c[0] + c[2] == c[1] else None)(images_decoded(".clip img.sheet")),
                   "the thumbnails to load")
    seen["thumbnails"] = {"decoded": decoded[0], "shown": decoded[1], "failed": decoded[2]}
    seen["thumbnail_size"] = driver.execute_script(
        "const i = document.querySelector('.clip img.sheet'); return [i.naturalWidth, i.naturalHeight];")
    # a thumbnail is a picture, not a blank: its pixels vary
    seen["thumbnail_pixels_vary"] = driver.execute_script(
        "const i = document.querySelector('.clip img.sheet'); const c = document.createElement('canvas');"
        "c.width = i.naturalWidth; c.height = i.naturalHeight; const x = c.getContext('2d'); x.drawImage(i, 0, 0);"
        "const d = x.getImageData(0, 0, c.width, c.height).data; const s = new Set();"
        "for (let k = 0; k < d.length; k += 4 * 97) s.add(d[k] >> 4 << 8 | d[k + 1] >> 4 << 4 | d[k + 2] >> 4);"
        "return s.size;")
    seen["captions"] = [c.text for c in driver.find_elements(By.CSS_SELECTOR, ".clip p.caption")]
    driver.save_screenshot(os.path.join(shots, f"console-shots-{target}.png"))

    # a larger preview
    driver.find_elements(By.CSS_SELECTOR, ".clip")[0].click()
    wait(120, lambda d: images_decoded("#preview-image")[0] == 1, "the larger preview")
    seen["preview_size"] = driver.execute_script(
        "const i = document.getElementById('preview-image'); return [i.naturalWidth, i.naturalHeight];")
    seen["preview_caption"] = driver.find_element(By.ID, "preview-caption").text
    driver.save_screenshot(os.path.join(shots, f"console-preview-{target}.png"))
    driver.find_element(By.ID, "preview-close").click()

    # filter by a column of the manifest
    driver.find_element(By.ID, "filter").send_keys("path LIKE '%bikes%'")
    driver.find_element(By.ID, "filter-button").click()
    wait(60, lambda d: "where=" in d.current_url and d.find_elements(By.ID, "clips-info")
         and "match" in d.find_element(By.ID, "clips-info").text, "the filtered clips")
    seen["filtered_info"] = driver.find_element(By.ID, "clips-info").text
    seen["filtered_paths"] = sorted({e.get_attribute("alt").split(" ")[0]
                                     for e in driver.find_elements(By.CSS_SELECTOR, ".clip img.sheet")})

    # the clusters
    driver.get(base + "/#/clusters")
    wait(30, lambda d: d.find_elements(By.CSS_SELECTOR, "#clusters p"), "the cluster view")
    seen["clusters"] = [{"name": s.get_attribute("data-name"),
                         "executors": len(s.find_elements(By.CSS_SELECTOR, "tr.executor"))}
                        for s in driver.find_elements(By.CSS_SELECTOR, "section.cluster")]
    driver.save_screenshot(os.path.join(shots, f"console-clusters-{target}.png"))
finally:
    driver.quit()

print(json.dumps(seen))
