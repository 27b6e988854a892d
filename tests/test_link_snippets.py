"""The README's cabinet-link snippets (PHP, Perl, Python), run for real against the verifier."""

import os
import re
import shutil
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import missing_component

from gateway.errors import LinkInvalid
from gateway.signing import Link, link_sig, verify_link

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
SECTION = "## The cabinet link (contract with the cabinet)"
BASE_URL = "https://pay.example.ru/pay"
SECRET = "cabinet-link-test-secret-0123456789abcdef"
TTL = 900
MAX_AGE = 1800

# Each driver calls the snippet's make_link with argv: base secret login account ttl [amount];
# a missing amount reaches the function as the language's own null.
LANGUAGES = {
    "php": {
        "command": ["php", "--"],
        "driver": 'echo make_link($argv[1], $argv[2], $argv[3], $argv[4], $argv[6] ?? null,'
                  ' (int) $argv[5]), "\\n";',
        "probe": ["php", "-r", "exit(function_exists('hash_hmac') ? 0 : 1);"],
        "install": "apt-get install php-cli",
    },
    "perl": {
        "command": ["perl", "-"],
        "driver": 'print make_link(@ARGV[0..3], $ARGV[5], $ARGV[4]), "\\n";',
        "probe": ["perl", "-MDigest::SHA", "-e1"],
        "install": "apt-get install perl (its Digest::SHA is needed)",
    },
    "python": {
        "command": [sys.executable, "-"],
        "driver": "import sys\nprint(make_link(*sys.argv[1:5],"
                  " sys.argv[6] if len(sys.argv) > 6 else None, int(sys.argv[5])))",
        "probe": [sys.executable, "-c", "import hmac, hashlib, urllib.parse"],
        "install": "a Python 3 interpreter",
    },
}
CASES = {
    "with_amount": ("dem001", "6", "1000.00"),
    "without_amount": ("dem001", "6", None),
    "login_with_at_and_dot": ("i.petrov@dem-net_1", "12345678901234567890", "1000.5"),
}


def contract_section(heading=SECTION):
    """A README section, up to the next heading of its level or above (a `# ` line is code)."""
    with open(README, encoding="utf-8") as readme:
        text = readme.read()
    assert heading in text.splitlines(), f"README.md has no line {heading!r}"
    section = text.split(heading + "\n", 1)[1]
    level = heading.split(" ")[0]
    return re.split(rf"^#{{2,{len(level)}}} ", section, maxsplit=1, flags=re.M)[0]


def snippets(heading=SECTION):
    """A section's fenced code blocks as {language: [code, ...]}."""
    found = {}
    for language, code in re.findall(r"^```(\w*)\n(.*?)^```$", contract_section(heading),
                                     re.M | re.S):
        found.setdefault(language, []).append(code)
    return found


def require(language):
    """Skip when the interpreter is missing, except under CI where a skip would hide it."""
    spec = LANGUAGES[language]
    probe = spec["probe"]
    if shutil.which(probe[0]) and subprocess.run(probe, capture_output=True).returncode == 0:
        return
    missing_component(
        f"{language} is needed to run the README's {language} snippet: {spec['install']}")


def run_snippet(language, secret, login, account, amount, base_url=BASE_URL):
    """Run the README's snippet plus a driver; returns the URL it printed."""
    require(language)
    spec = LANGUAGES[language]
    (code,) = snippets()[language]
    argv = [base_url, secret, login, account, str(TTL)] + ([] if amount is None else [amount])
    done = subprocess.run(
        spec["command"] + argv, input=code + "\n" + spec["driver"] + "\n",
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONUTF8="1", PYTHONDONTWRITEBYTECODE="1"),
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr, done.stderr  # warnings too: the snippets must run clean
    return done.stdout.strip()


def query_of(url):
    """The query as verify_link takes it; blanks kept, as the app's request.args keeps them."""
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


@pytest.fixture(params=sorted(LANGUAGES))
def language(request):
    return request.param


def test_readme_section_has_one_snippet_per_language():
    found = snippets()
    for language in LANGUAGES:
        assert len(found.get(language, [])) == 1, f"want one ```{language} block"
        assert "make_link" in found[language][0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_snippet_link_is_accepted_by_the_gateway(language, case):
    login, account, amount = CASES[case]
    before = int(time.time())
    url = run_snippet(language, SECRET, login, account, amount)
    after = int(time.time())
    assert url.startswith(BASE_URL + "?")
    query = query_of(url)
    link = verify_link(query, SECRET, after, MAX_AGE)
    assert link == Link(login, account, amount)
    assert before + TTL <= int(query["expires"][0]) <= after + TTL
    names = [pair.split("=", 1)[0] for pair in urlsplit(url).query.split("&")]
    assert names == [n for n in ("login", "account", "amount", "expires", "sig")
                     if n != "amount" or amount is not None]


def test_snippet_percent_encodes_the_login(language):
    url = run_snippet(language, SECRET, "i.petrov@dem-net_1", "6", None)
    assert "login=i.petrov%40dem-net_1&" in url


@pytest.mark.parametrize("case", ["with_amount", "without_amount"])
def test_snippet_link_is_refused_under_another_secret(language, case):
    login, account, amount = CASES[case]
    query = query_of(run_snippet(language, SECRET, login, account, amount))
    with pytest.raises(LinkInvalid, match="signature mismatch"):
        verify_link(query, SECRET + "x", int(time.time()), MAX_AGE)


def test_snippet_link_made_with_another_secret_is_refused(language):
    query = query_of(run_snippet(language, "not-" + SECRET, "dem001", "6", "1000.00"))
    with pytest.raises(LinkInvalid, match="signature mismatch"):
        verify_link(query, SECRET, int(time.time()), MAX_AGE)


def test_snippet_uses_the_secret_as_utf8(language):
    secret = "секрет-кабинета-ключ"
    query = query_of(run_snippet(language, secret, "dem001", "6", "1000.00"))
    assert verify_link(query, secret, int(time.time()), MAX_AGE) == Link("dem001", "6", "1000.00")


def test_snippet_link_opens_the_confirmation_page(language, app, client, clock):
    base_url = app.config["PUBLIC_URL"] + "/pay"
    url = run_snippet(language, app.config["CABINET_SECRET"], "dem001", "6", "1000.00", base_url)
    assert url.startswith(base_url + "?")
    clock.now = time.time()  # the snippet stamped the link with the real clock
    parts = urlsplit(url)
    response = client.get(f"{parts.path}?{parts.query}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    assert "Заплатить" in page and "1\u00a0000,00" in page.replace("&nbsp;", "\u00a0")


def test_readme_worked_example_is_what_the_gateway_computes():
    section = contract_section()
    key = re.search(r"^key\s+(\S+)$", section, re.M).group(1)
    examples = re.findall(r"^message\s+(\S+).*\n^sig\s+([0-9a-f]{64})$", section, re.M)
    assert len(examples) == 2
    for message, sig in examples:
        login, account, amount, expires = message.split("\\n")
        assert link_sig(key, login, account, amount or None, expires) == sig
    query = query_of(re.search(r"^GET (\S+)$", section, re.M).group(1))
    now = int(query["expires"][0])
    assert verify_link(query, key, now, MAX_AGE) == Link("dem001", "6", "1000.00")


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_missing_interpreter_fails_under_ci(monkeypatch, ci):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="apt-get install php-cli"):
        require("php")


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_missing_interpreter_is_skipped_with_install_hint_outside_ci(monkeypatch, ci):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="apt-get install php-cli"):
        require("php")
