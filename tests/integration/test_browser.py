"""The web client end to end in a real browser: tests/browser/run.sh (playwright-core
driving Debian's chromium) against a real 3-node cluster, with the two chat users
on two different gateways.  Afterwards every gateway must still be serving: the
browser's connections closing (idle preconnects included) must not take a node down.

Needs node, npm and chromium (scripts/install-deps.sh installs them); without them
the test fails, it does not skip.  run.sh installs playwright-core from
tests/browser/package-lock.json with npm when node_modules is missing (no browser
download)."""
import os
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from chorus_cluster import SOURCE, Cluster, run_tests  # noqa: E402

BROWSER_DIR = os.path.join(SOURCE, "tests", "browser")
RUN_SH = os.path.join(BROWSER_DIR, "run.sh")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
RUN_TIMEOUT = 170  # s; the browser test itself gives up after 150 s


def require_tools():
    missing = [t for t in ("node", "npm") if shutil.which(t) is None]
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(CHROMIUM)
    if missing:
        raise AssertionError(
            "the browser test needs %s, which %s missing: run scripts/install-deps.sh "
            "as root (it installs chromium, nodejs and npm from Debian)"
            % (", ".join(missing), "is" if len(missing) == 1 else "are"))
    if not os.path.exists(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        print("note: installing playwright-core with npm ci (no browser download)", flush=True)


def healthy(base_url, timeout=3):
    try:
        with urllib.request.urlopen(base_url + "/healthz", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def test_two_users_chat_through_the_web_client():
    require_tools()
    c = Cluster("browser", offset=8000)
    c.up()
    c.wait_all_leaders()
    gateways = ["http://" + n["gateway"] for n in c.conf["nodes"]]
    env = dict(os.environ, CHORUS_GW1=gateways[0], CHORUS_GW2=gateways[1],
               CHROMIUM=CHROMIUM, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    start = time.time()
    try:
        p = subprocess.run(["sh", RUN_SH], env=env, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        for part in (e.stdout, e.stderr):
            if part:
                sys.stdout.write(part.decode(errors="replace") if isinstance(part, bytes) else part)
        raise AssertionError("tests/browser/run.sh did not finish within %d s" % RUN_TIMEOUT)
    print("---- tests/browser/run.sh (%.1fs, exit %d) ----" % (time.time() - start, p.returncode))
    sys.stdout.write(p.stdout)
    sys.stdout.write(p.stderr)
    sys.stdout.flush()
    assert p.returncode == 0, "tests/browser/run.sh failed with exit code %d" % p.returncode

    # Chromium has closed its connections by now; every gateway must still answer.
    time.sleep(1.0)
    down = [g for g in gateways if not healthy(g)]
    assert not down, "gateway(s) %s stopped serving after the browser session" % ", ".join(down)
    c.down()


if __name__ == "__main__":
    run_tests(test_two_users_chat_through_the_web_client)
