"""The install in docs/operations.md, done for real into a temporary root: a system user, a
read-only checkout with a venv made by `pip install <checkout>` (no test tools), the unit's
ExecStart run as systemd would run it, a real nginx over the unix socket; one payment served,
the database backed up online and restored."""

import http.client
import os
import pwd
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from conftest import ROOT, hidden, missing_component
from reliability.proxy import Nginx, UnixConnection, nginx_binary
from reliability.test_nginx import unit_settings

from gateway import billing, chronopay
from gateway.signing import make_link

pytestmark = pytest.mark.slow
UNIT = os.path.join(ROOT, "deploy", "dem-gateway.service")
CHRONOPAY_IP = "127.0.0.2"
# The unit's absolute paths, moved into the temporary root.
PATHS = ("/opt/dem-gateway", "/etc/dem-gateway", "/var/lib/dem-gateway", "/run/dem-gateway")


def system_python():
    """Debian's python3, as docs/operations.md uses it; a venv made from a python under /root
    (pyenv) could not be run by the service user."""
    for path in ("/usr/bin/python3", sys.executable):
        check = subprocess.run([path, "-c", "import ensurepip, venv"], capture_output=True,
                               timeout=60) if os.path.exists(path) else None
        if check and check.returncode == 0:
            return path
    missing_component("no python3 with venv: apt-get install python3-venv")
    return None


class Install:
    """docs/operations.md's steps, each path under one temporary root."""

    def __init__(self, root):
        self.root = root
        self.code, self.etc, self.state, self.run = (self.moved(p) for p in PATHS)
        self.unit = unit_settings(UNIT)["Service"]
        self.user = "dgw" + secrets.token_hex(3)
        self.process = None
        self.log_path = os.path.join(root, "service.log")

    def moved(self, text):
        for path in PATHS:
            text = text.replace(path, self.root + path)
        return text

    def one(self, key):
        return self.unit[key][-1]

    def system_user(self):
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", self.state, "--shell", "/usr/sbin/nologin", self.user],
                       check=True, capture_output=True, timeout=60)
        entry = pwd.getpwnam(self.user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def checkout(self):
        """The checkout's files, a venv with `pip install <checkout>`, then read-only."""
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                               check=True, capture_output=True, timeout=60).stdout
        for name in filter(None, files.decode().split("\0")):
            if os.path.isfile(os.path.join(ROOT, name)):
                os.makedirs(os.path.dirname(os.path.join(self.code, name)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, name), os.path.join(self.code, name))
        venv = os.path.join(self.code, ".venv")
        subprocess.run([system_python(), "-m", "venv", venv], check=True, timeout=300)
        pip = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", self.code],
                             capture_output=True, text=True, timeout=600)
        assert pip.returncode == 0, pip.stderr
        subprocess.run(["chmod", "-R", "a-w", self.code], check=True, timeout=60)

    def config(self, public_url):
        """/etc/dem-gateway/config.py: config.example.py with every secret of our own."""
        self.secrets = {key: secrets.token_urlsafe(36) for key in (
            "SECRET_KEY", "CABINET_SECRET", "CHRONOPAY_SHARED_SECRET")}
        self.secrets["BILLING_SECRET"] = billing.new_secret()
        with open(os.path.join(ROOT, "config.example.py"), encoding="utf-8") as fh:
            text = self.moved(fh.read())
        text += "".join(f"{key} = {value!r}\n" for key, value in self.secrets.items())
        text += (f"PUBLIC_URL = {public_url!r}\nCHRONOPAY_CALLBACK_IPS = [{CHRONOPAY_IP!r}]\n"
                 "BILLING_WORKER = False  # no billing to reach from a test\n")
        os.makedirs(self.etc)
        os.chown(self.etc, 0, self.gid)
        os.chmod(self.etc, 0o750)
        path = os.path.join(self.etc, "config.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chown(path, 0, self.gid)
        os.chmod(path, 0o640)

    def directories(self):
        """What StateDirectory= and RuntimeDirectory= make before ExecStart."""
        for path, mode in ((self.state, self.one("StateDirectoryMode")),
                           (self.run, self.one("RuntimeDirectoryMode"))):
            os.makedirs(path)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, int(mode, 8))

    def environment(self):
        """A clean environment as systemd builds it for User=, plus the unit's Environment=."""
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "HOME": self.state, "USER": self.user,
               "LOGNAME": self.user, "SHELL": "/usr/sbin/nologin"}
        for line in self.unit["Environment"]:
            for item in shlex.split(line):
                key, value = item.split("=", 1)
                env[key] = self.moved(value)
        return env

    def socket(self):
        return self.environment()["UNIX_SOCKET"]

    def start(self):
        """ExecStart in WorkingDirectory as User= with UMask=, until it answers on the socket."""
        assert self.one("User") == "dem-gateway" and self.one("Group") == "dem-gateway"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            shlex.split(self.moved(self.one("ExecStart"))),
            cwd=self.moved(self.one("WorkingDirectory")), env=self.environment(),
            user=self.uid, group=self.gid, extra_groups=[], umask=int(self.one("UMask"), 8),
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            conn = UnixConnection(self.socket())
            try:
                conn.request("GET", "/nowhere")
                conn.getresponse().read()
                return
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        raise AssertionError("the service did not answer on its socket: " + self.output())

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        if self.process:
            self.log.close()

    def output(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def cleanup(self):
        self.stop()
        subprocess.run(["userdel", self.user], capture_output=True, timeout=60)
        subprocess.run(["chmod", "-R", "u+w", self.root], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def install():
    if os.geteuid() != 0:
        missing_component("the install test runs as root (useradd, a service user)")
    nginx_binary()
    for tool, package in (("useradd", "passwd"), ("userdel", "passwd"), ("git", "git"),
                          ("sqlite3", "sqlite3")):
        if shutil.which(tool) is None:
            missing_component(f"{tool} is not installed: apt-get install {package}")
    root = tempfile.mkdtemp(prefix="dem-deploy-")
    os.chmod(root, 0o755)  # the service user must reach its files under it
    install = Install(root)
    try:
        yield install
    finally:
        install.cleanup()


def pay_through(nginx, install):
    """A subscriber's link, the confirmation, ChronoPay's callback; returns the result URL."""
    session = requests.Session()
    query = make_link(install.secrets["CABINET_SECRET"], "dem001", "6", "1000.00",
                      int(time.time()) + 600)
    page = session.get(nginx.url + "/pay", params=query, timeout=30, verify=nginx.cert)
    assert page.status_code == 200, page.text
    form = {"csrf_token": hidden(page.text, "csrf_token"), "token": hidden(page.text, "token")}
    handoff = session.post(nginx.url + "/pay/confirm", data=form, headers={"Referer": page.url},
                           allow_redirects=False, timeout=30, verify=nginx.cert)
    assert handoff.status_code == 303, handoff.text
    fields = {k: v[0] for k, v in parse_qs(urlsplit(handoff.headers["Location"]).query).items()}
    callback = {"transaction_type": "Purchase", "transaction_id": "90001", "customer_id": "c-1",
                "total": fields["product_price"], "currency": "RUB",
                "order_id": fields["order_id"], "product_id": fields["product_id"]}
    callback["sign"] = chronopay.callback_sign(
        install.secrets["CHRONOPAY_SHARED_SECRET"], "c-1", "90001", "Purchase",
        callback["total"])
    conn = http.client.HTTPSConnection("127.0.0.1", nginx.https_port, timeout=30,
                                       source_address=(CHRONOPAY_IP, 0), context=nginx.tls())
    conn.request("POST", "/chronopay/callback", body=urlencode(callback),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    status = conn.getresponse().status
    conn.close()
    assert status == 200
    return session, fields["success_url"]


def paid_page(session, url, nginx):
    page = session.get(url, timeout=30, verify=nginx.cert)
    return page.status_code == 200 and "Платеж принят" in page.text


def test_the_documented_install_serves_a_payment_through_nginx_and_restores_a_backup(install):
    install.system_user()
    install.checkout()
    tools = subprocess.run([os.path.join(install.code, ".venv", "bin", "python"), "-c",
                            "import pytest"], capture_output=True, timeout=60)
    nginx = Nginx(os.path.join(install.root, "nginx"), install.socket(), allow=[CHRONOPAY_IP])
    os.makedirs(nginx.directory)
    install.config(nginx.url)
    install.directories()
    # The snippet as docs/operations.md writes it, from the service's own configuration.
    env = install.environment()
    allow = subprocess.run([os.path.join(install.code, ".venv", "bin", "python"), "-m",
                            "gateway.nginx_allow"], cwd=install.code, env=env,
                           capture_output=True, text=True, timeout=60)
    assert allow.returncode == 0, allow.stderr
    assert re.findall(r"^(allow \S+;|deny all;)$", allow.stdout, re.M) == [
        f"allow {CHRONOPAY_IP};", "deny all;"]

    install.start()
    nginx.start()
    try:
        sock = os.stat(install.socket())
        session, result = pay_through(nginx, install)
        paid = paid_page(session, result, nginx)
        database = os.path.join(install.state, "gateway.sqlite3")
        # Online backup with the documented command while the service runs.
        backup = os.path.join(install.root, "backup.sqlite3")
        subprocess.run(["sqlite3", database, f".backup {backup}"], check=True, timeout=60)
        install.stop()
        for suffix in ("", "-wal", "-shm"):  # the disaster
            if os.path.exists(database + suffix):
                os.remove(database + suffix)
        subprocess.run(["install", "-m", "600", "-o", install.user, "-g", install.user, backup,
                        database], check=True, timeout=60)
        integrity = subprocess.run(["sqlite3", database, "PRAGMA integrity_check"],
                                   capture_output=True, text=True, timeout=60).stdout.strip()
        install.start()
        restored = paid_page(session, result, nginx)
    finally:
        nginx.stop()
        install.stop()
    checks = {
        "venv without test tools": tools.returncode != 0,
        "socket 660, the service's": stat.S_IMODE(sock.st_mode) == 0o660
        and sock.st_uid == install.uid,
        "nothing written in the checkout": not os.path.exists(
            os.path.join(install.code, "instance")),
        "database in the state directory": os.path.exists(database),
        "payment served through nginx": paid,
        "backup restored, integrity ok": integrity == "ok" and restored,
    }
    assert all(checks.values()), (checks, install.output())
    assert "Traceback" not in install.output()


def test_systemd_analyze_verifies_the_unit():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_component("systemd-analyze is not installed (apt-get install systemd)")
    with tempfile.TemporaryDirectory() as root:
        # The unit as shipped, its absolute paths moved under root so that they exist.
        with open(UNIT, encoding="utf-8") as fh:
            text = fh.read()
        for path in PATHS:
            text = text.replace(path, root + path)
        python = os.path.join(root, "opt/dem-gateway/.venv/bin/python")
        os.makedirs(os.path.dirname(python))
        os.symlink(sys.executable, python)
        unit = os.path.join(root, "dem-gateway.service")
        with open(unit, "w", encoding="utf-8") as fh:
            fh.write(text)
        result = subprocess.run([analyze, "verify", unit], capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 0, result.stderr
    assert "dem-gateway.service" not in result.stderr, result.stderr


def test_the_allow_snippet_lists_each_address_then_denies_and_refuses_a_non_address():
    from gateway.errors import ConfigError
    from gateway.nginx_allow import snippet

    assert snippet(["93.174.51.230", " 2001:db8::1"]).splitlines()[1:] == [
        "allow 93.174.51.230;", "allow 2001:db8::1;", "deny all;"]
    with pytest.raises(ConfigError, match="CHRONOPAY_CALLBACK_IPS has '93.174.51.230; allow all'"):
        snippet(["93.174.51.230; allow all"])
    with open(os.path.join(ROOT, "deploy", "chronopay-allow.conf"), encoding="utf-8") as fh:
        assert fh.read() == snippet(["93.174.51.230"])  # the shipped one: the default address
