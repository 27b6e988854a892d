"""Hostile input: mutated callbacks, the amount grammars, link abuse, a captured callback,
malformed HTTP straight at waitress, and a coverage-guided fuzz run of the parsers."""

import ast
import hashlib
import math
import pathlib
import re
import struct
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import parse_qs, quote_from_bytes, urlencode, urlsplit

import requests
from conftest import ROOT, LiveServer, callback_fields, hand_off, hidden, link
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.money import format_human
from gateway.signing import make_link

from . import fuzz_targets, rawhttp
from .live import SANDBOX, Database, callback_for, open_order, signed_link

CALLBACK = "/chronopay/callback"
ALLOWED = {"REMOTE_ADDR": "127.0.0.1"}  # the attacker sends from ChronoPay's address: worst case


def snapshot(store):
    """Everything a callback may change, but the review flags a replay sets on purpose (a
    genuine sign re-used against another order marks both orders for a person)."""
    tx = store.read()
    return ([(o["order_id"], o["status"], without_replays(o["review"]), o["paid_at"],
              o["transaction_id"]) for o in tx.orders()], tx.count("transactions"),
            tx.count("events"))


def without_replays(review):
    lines = [line for line in (review or "").split("\n") if line and " replay: " not in line]
    return "\n".join(lines) or None


def post_callback(client, body, content_type="application/x-www-form-urlencoded", query=""):
    return client.post(CALLBACK + (f"?{query}" if query else ""), data=body,
                       content_type=content_type, environ_base=ALLOWED)


def verdicts(store):
    counts = Counter(row["verdict"] for row in store.read().callbacks(limit=10**6))
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())


def paid_and_pending(client, app):
    """Order A paid by its genuine callback; B (same amount) and C (another) still pending."""
    a = hand_off(client, app, "1000.00")
    genuine = list(callback_fields(app, a).items())
    assert post_callback(client, urlencode(genuine)).status_code == 200
    b, c = hand_off(client, app, "1000.00"), hand_off(client, app, "250.00")
    return genuine, [a["order_id"], b["order_id"], c["order_id"]]


# --- Callback fuzzing ------------------------------------------------------------------------

LOOKALIKES = {"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і",
              "P": "Р", "T": "Т", "C": "С", "0": "０", "1": "１", "2": "٢", "4": "٤", "7": "७",
              ".": "．", "_": "＿", "-": "−", "s": "ѕ"}
SPACES = (" ", "\t", "\u00a0", "\u200b", "\n", "\r", "\u3000", "+", "%20", "\ufeff")
SIGNED = ("customer_id", "transaction_id", "transaction_type", "total")
KINDS = ("case", "space", "lookalike", "truncate", "drop", "extra", "extra_known", "repeat",
         "oversize", "huge", "rotate", "resplit", "retarget", "unsigned")
ENCODINGS = ("form", "form", "form", "query", "get", "get", "multipart", "json", "text",
             "noise", "cut")


def edit_text(kind, text, at):
    if kind == "case":
        return (str.upper, str.lower, str.swapcase, str.title)[at % 4](text)
    if kind == "space":
        pos = (at * 7) % (len(text) + 1)
        return text[:pos] + SPACES[at % len(SPACES)] + text[pos:]
    if kind == "lookalike":
        spots = [i for i, ch in enumerate(text) if ch in LOOKALIKES]
        if not spots:
            return text
        i = spots[at % len(spots)]
        return text[:i] + LOOKALIKES[text[i]] + text[i + 1:]
    return text[:at % (len(text) + 1)]  # truncate


def resplit(pairs, at):
    """Move characters across a boundary of the signed text: the sign stays valid."""
    fields = dict(pairs)
    left, right = SIGNED[at % 3], SIGNED[at % 3 + 1]
    if left not in fields or right not in fields:
        return pairs
    shift = (at // 3) % 8 + 1
    a, b = fields[left], fields[right]
    if at % 2 and len(a) > shift:
        a, b = a[:-shift], a[-shift:] + b
    elif len(b) > shift:
        a, b = a + b[:shift], b[shift:]
    moved = {left: a, right: b}
    return [(name, moved.get(name, value)) for name, value in pairs]


def mutate(pairs, op, orders):
    kind, i, part, at, text = op
    pairs = list(pairs)
    i = i % len(pairs) if pairs else 0
    if kind in ("case", "space", "lookalike", "truncate") and pairs:
        name, value = pairs[i]
        pairs[i] = (edit_text(kind, name, at), value) if part else (name, edit_text(kind, value,
                                                                                     at))
    elif kind == "drop" and pairs:
        del pairs[i]
    elif kind == "extra":
        pairs.append((text or "x", text))
    elif kind == "extra_known":
        pairs.insert(at % (len(pairs) + 1), ((("sign", "order_id") + SIGNED)[at % 6], text))
    elif kind == "repeat" and pairs:
        pairs.insert(at % (len(pairs) + 1), (pairs[i][0], pairs[i][1] if at % 2 else text))
    elif kind == "oversize" and pairs:
        pairs[i] = (pairs[i][0], pairs[i][1] + "9" * (513 + at * 10))
    elif kind == "huge":
        pairs.append(("cs3", "x" * 70_000))
    elif kind == "rotate" and pairs:
        pairs = pairs[at % len(pairs):] + pairs[:at % len(pairs)]
    elif kind == "resplit":
        pairs = resplit(pairs, at)
    elif kind == "retarget":
        target = (orders[1], orders[2], "nope", "", orders[0].upper(), orders[0] + " ")[at % 6]
        pairs = [(n, target if n == "order_id" else v) for n, v in pairs]
    elif kind == "unsigned":
        name = ("currency", "product_id", "cs1", "email", "site_id")[at % 5]
        pairs = [(n, v) for n, v in pairs if n != name] + [(name, text)]
    return pairs


def encode(pairs, encoding, at, noise):
    """(body, content type, query string) for one way of sending the fields."""
    form = urlencode(pairs).encode()
    if encoding in ("query", "get"):
        return b"", "application/x-www-form-urlencoded", form.decode()
    if encoding == "multipart":
        parts = b"".join(b"--B\r\nContent-Disposition: form-data; name=\"" + n.encode()
                         + b"\"\r\n\r\n" + v.encode() + b"\r\n" for n, v in pairs)
        return parts + b"--B--\r\n", "multipart/form-data; boundary=B", ""
    if encoding == "json":
        import json
        return json.dumps(dict(pairs)).encode(), "application/json", ""
    if encoding == "text":
        return form, "text/plain", ""
    if encoding == "noise":
        pos = at % (len(form) + 1)
        return form[:pos] + noise + form[pos:], "application/x-www-form-urlencoded", ""
    if encoding == "cut":
        return form[:at % (len(form) + 1)], "application/x-www-form-urlencoded", ""
    return form, "application/x-www-form-urlencoded", ""


operations = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 40), st.booleans(),
                                st.integers(0, 10_000), st.text(max_size=12)),
                      min_size=1, max_size=4)


def test_callback_fuzzing_changes_nothing(client, app, store, scale, figures, caplog):
    genuine, orders = paid_and_pending(client, app)
    before = snapshot(store)
    seen = Counter()

    @settings(max_examples=2000 * scale, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(operations, st.sampled_from(ENCODINGS), st.integers(0, 10_000),
           st.binary(min_size=1, max_size=8))
    def one(ops, encoding, at, noise):
        pairs = genuine
        for op in ops:
            pairs = mutate(pairs, op, orders)
        body, content_type, query = encode(pairs, encoding, at, noise)
        if encoding == "get":  # ChronoPay's cb_type=G
            response = client.get(f"{CALLBACK}?{query}", environ_base=ALLOWED)
        else:
            response = post_callback(client, body, content_type, query)  # TESTING re-raises
        seen["runs"] += 1
        assert response.status_code < 500, response.status_code
        assert b"Traceback" not in response.data
        assert snapshot(store) == before, f"state changed by {ops} {encoding}"
        seen["passed"] += 1
        seen[response.status_code] += 1

    try:
        one()
    finally:
        tracebacks = caplog.text.count("Traceback")
        figures("Callback fuzzing (Hypothesis, in-process)", seen["runs"], seen["passed"],
                f"{seen['runs'] - seen['passed']} state changes or 5xx, {tracebacks} tracebacks;"
                f" answers 200×{seen[200]} 403×{seen[403]} 413×{seen[413]};"
                f" journal: {verdicts(store)}")
    assert seen["runs"] >= 1000 * scale and tracebacks == 0


# --- Amount grammar --------------------------------------------------------------------------

# Hostile spellings of 1000 (or of some amount), and what the form may make of each: a person
# may type spaces and a comma; machines (the link, the callback) send exactly 1000.00.
AMOUNTS = [
    ("1e3", None), ("1E3", None), ("+1000", None), (" 1000.00", "1000.00"),
    ("1000.00 ", "1000.00"), ("1000\n", "1000.00"), ("-1", None), ("-1000.00", None),
    ("NaN", None), ("nan", None), ("sNaN", None), ("Infinity", None), ("-Infinity", None),
    ("inf", None), ("1000.000", None), ("999.999", None), ("1" * 40, None),
    ("9" * 13 + ".00", None), ("1e309", None), ("１０００", None), ("١٠٠٠", None),
    ("१०००", None), ("𝟏𝟎𝟎𝟎", None), ("1000,00", "1000.00"), ("1 000", "1000.00"),
    ("1_000", None), ("0x3e8", None), ("1000.", None), (".50", None), ("1000.00\x00", None),
    ("1000.0O", None), ("1,000.00", None), ("1000,5", "1000.50"), ("1000.00.00", None),
]
MONEY_MODULES = ("money", "payments", "pay", "chronopay", "callback", "billing", "store/sqlite",
                 "signing", "sandbox/cabinet", "sandbox/chronopay", "sandbox/billing",
                 "sandbox/ledger")


def floats_in(module):
    """float() calls, the name float and float literals in one gateway module."""
    tree = ast.parse(pathlib.Path(ROOT, "gateway", f"{module}.py").read_text(encoding="utf-8"))
    return [node.lineno for node in ast.walk(tree)
            if (isinstance(node, ast.Name) and node.id == "float")
            or (isinstance(node, ast.Constant) and isinstance(node.value, float))]


def test_amount_grammar_refuses_what_is_not_rubles(client, app, store, figures):
    wrong, runs, typed_ok = [], 0, []
    for text, meant in AMOUNTS:
        # The cabinet link: a machine's amount, never anything but digits and two decimals.
        if text:
            runs += 1
            page = client.get(link(app, amount=text))
            if page.status_code not in (200, 403) or 'name="token"' in page.get_data(
                    as_text=True):
                wrong.append(("link", text, page.status_code))
        # The form: what a person types.
        page = client.get(link(app, amount=None)).get_data(as_text=True)
        answer = client.post("/pay/amount", data={
            "csrf_token": hidden(page, "csrf_token"), "ticket": hidden(page, "ticket"),
            "amount": text})
        runs += 1
        shown = answer.get_data(as_text=True).replace("&nbsp;", "\u00a0")
        if meant is None and answer.status_code != 422:
            wrong.append(("form", text, answer.status_code))
        elif meant is not None:
            if answer.status_code != 200 or f"{format_human(Decimal(meant))} руб." not in shown:
                wrong.append(("form", text, answer.status_code))
            typed_ok.append(text.strip() or text)
    assert store.read().count("orders") == 0
    # The callback: a signed total that is not exactly the order's amount never pays it.
    for text, _ in AMOUNTS:
        query = hand_off(client, app, "1000.00")
        fields = callback_fields(app, query, transaction_id=f"t{runs}", total=text)
        answer = post_callback(client, urlencode(fields))
        runs += 1
        order = store.read().order(query["order_id"])
        if answer.status_code >= 500 or order["status"] != "pending":
            wrong.append(("callback", text, answer.status_code))
    assert store.read().count("events") == 0
    floats = {m: floats_in(m) for m in MONEY_MODULES if floats_in(m)}
    figures("Amount grammar: link, form, callback", runs, runs - len(wrong),
            f"{len(AMOUNTS)} hostile spellings: {len(wrong)} accepted where refused; the form "
            f"reads {len(typed_ok)} as people write them (spaces, comma); 0 paid by a callback;"
            f" float in money code: {sum(map(len, floats.values()))}")
    assert not wrong and not floats


# --- Link abuse ------------------------------------------------------------------------------

def test_link_abuse_is_refused(client, app, store, clock, figures, tmp_path):
    secret, now = app.config["CABINET_SECRET"], int(clock())
    outcomes = Counter()

    def expect(url, statuses, label):
        response = client.get(url)
        ok = response.status_code in statuses and (
            response.status_code == 200 or 'name="token"' not in response.get_data(as_text=True))
        outcomes["runs"] += 1
        outcomes["passed" if ok else f"failed {label}"] += 1

    good = link(app, expires=now + 600)
    expect(good, (200,), "genuine")
    clock.advance(600)
    expect(good, (200,), "last second")
    clock.advance(1)
    expect(good, (410,), "expired by one second")
    clock.advance(-601)
    expect(link(app, expires=now + app.config["LINK_MAX_AGE"] + 1), (403,), "from the future")
    expect(link(app, expires=now + 10**9), (403,), "far future")
    query = dict(p.split("=", 1) for p in good.split("?", 1)[1].split("&"))
    for name, value in query.items():  # each field edited, one character at a time
        for i in range(len(value)):
            swap = "0" if value[i] != "0" else "1"
            edited = dict(query, **{name: value[:i] + swap + value[i + 1:]})
            expect("/pay?" + "&".join(f"{k}={v}" for k, v in edited.items()), (403,), name)
        expect("/pay?" + "&".join(f"{k}={v}" for k, v in query.items() if k != name), (403,),
               f"without {name}")
    expect(good.replace(query["sig"], query["sig"].upper()), (403,), "sig upper-case")
    for cut in range(len(good) - 1, len("/pay") - 1, -1):  # truncated anywhere
        expect(good[:cut], (403,), "truncated")
    expect(good.replace(query["sig"], ""), (403,), "empty sig")
    for key in ("", app.config["SECRET_KEY"], app.config["CHRONOPAY_SHARED_SECRET"],
                secret + "x", secret[:-1]):  # signed with another key
        other = make_link(key, "dem001", "6", "1000.00", now + 600)
        expect("/pay?" + urlencode(other), (403,), "another key")
    assert store.read().count("orders") == 0
    replay = replayed_at_once(tmp_path)
    figures("Link abuse: expired, future, edited, truncated, other key, replayed",
            outcomes["runs"] + replay["runs"], outcomes["passed"] + replay["passed"],
            f"{outcomes['runs']} abused links: {outcomes['runs'] - outcomes['passed']} "
            f"accepted; one link opened {replay['opens']}× at once: {replay['open_ok']} pages, "
            f"0 orders; its confirmation posted {replay['posts']}× at once: "
            f"{replay['orders']} order, {replay['locations']} distinct order_id handed off")
    assert outcomes["runs"] == outcomes["passed"], outcomes
    assert replay["runs"] == replay["passed"], replay


def replayed_at_once(tmp_path, opens=40, posts=20):
    """One genuine link and one confirmation, each sent many times at once to waitress."""
    server = LiveServer(tmp_path, env={"THREADS": "8"}).start()
    db = Database(tmp_path / "live.sqlite3")
    try:
        url, query = signed_link(server.url, SANDBOX["CABINET_SECRET"])
        with ThreadPoolExecutor(16) as pool:
            pages = list(pool.map(lambda _: requests.get(url, params=query, timeout=30),
                                  range(opens)))
        open_ok = sum(p.status_code == 200 and 'name="token"' in p.text for p in pages)
        orders_after_opening = db.count("orders")
        session = requests.Session()
        page = session.get(url, params=query, timeout=30)
        form = {"csrf_token": hidden(page.text, "csrf_token"), "token": hidden(page.text, "token")}
        cookies = session.cookies.get_dict()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: requests.post(
                server.url + "/pay/confirm", data=form, cookies=cookies, timeout=30,
                allow_redirects=False), range(posts)))
    finally:
        server.stop()
    # The same order each time (the Location's signed return addresses carry a timestamp).
    locations = {parse_qs(urlsplit(a.headers.get("Location", "")).query).get("order_id",
                                                                            [None])[0]
                 for a in answers}
    passed = (open_ok == opens) + (orders_after_opening == 0) + sum(
        a.status_code == 303 for a in answers)
    return {"runs": 2 + posts, "passed": passed - (len(locations) != 1) * posts,
            "opens": opens, "open_ok": open_ok, "posts": posts,
            "orders": db.count("orders"), "locations": len(locations)}


# --- A captured callback ---------------------------------------------------------------------

def md5_extend(digest_hex, prefix_len, suffix):
    """(glue, digest) with digest = md5(X + glue + suffix), knowing only md5(X) and len(X)."""
    shifts = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4
    k = [int(abs(math.sin(i + 1)) * 2**32) & 0xFFFFFFFF for i in range(64)]

    def pad(n):
        return b"\x80" + b"\x00" * ((55 - n) % 64) + struct.pack("<Q", 8 * n)

    def compress(state, block):
        m = struct.unpack("<16I", block)
        a, b, c, d = state
        for i in range(64):
            if i < 16:
                f, g = (b & c) | (~b & d), i
            elif i < 32:
                f, g = (d & b) | (~d & c), (5 * i + 1) % 16
            elif i < 48:
                f, g = b ^ c ^ d, (3 * i + 5) % 16
            else:
                f, g = c ^ (b | ~d), (7 * i) % 16
            f = (f + a + k[i] + m[g]) & 0xFFFFFFFF
            a, d, c = d, c, b
            b = (b + ((f << shifts[i]) | (f >> (32 - shifts[i])))) & 0xFFFFFFFF
        return [(x + y) & 0xFFFFFFFF for x, y in zip(state, (a, b, c, d), strict=True)]

    glue = pad(prefix_len)
    state = list(struct.unpack("<4I", bytes.fromhex(digest_hex)))
    data = suffix + pad(prefix_len + len(glue) + len(suffix))
    for i in range(0, len(data), 64):
        state = compress(state, data[i:i + 64])
    return glue, struct.pack("<4I", *state).hex()


def captured_variants(genuine, secret_len, orders):
    """Every way we know to re-send or re-arrange one genuine callback: (label, body, type)."""
    form = "application/x-www-form-urlencoded"
    fields = dict(genuine)

    def body(pairs):
        return urlencode(pairs).encode()

    def with_order(order_id, pairs=genuine):
        return [(n, order_id if n == "order_id" else v) for n, v in pairs]

    out = [("as captured", body(genuine), form)] * 5
    for b in range(3):  # every split of the signed text that keeps the sign valid
        left, right = SIGNED[b], SIGNED[b + 1]
        text = fields[left] + fields[right]
        for cut in range(1, len(text)):
            if cut == len(fields[left]):
                continue
            moved = dict(fields, **{left: text[:cut], right: text[cut:]})
            for order_id in orders[:2]:
                out.append((f"re-split {left}|{right}", body(with_order(order_id,
                                                                         moved.items())), form))
    for order_id in (*orders[1:], "nope", "", orders[0].upper(), orders[0] + " "):
        out.append(("other order_id", body(with_order(order_id)), form))
    for name, value in (("currency", "rub"), ("currency", "USD"), ("product_id", "x"),
                        ("cs1", "evil"), ("email", "a@b"), ("zz_new", "1")):
        for order_id in orders[:2]:
            changed = [(n, v) for n, v in with_order(order_id) if n != name] + [(name, value)]
            out.append(("unsigned field changed", body(changed), form))
    out.append(("fields reversed", body(genuine[::-1]), form))
    out.append(("sign twice", body(genuine + [("sign", fields["sign"])]), form))
    out.append(("order_id twice", body(genuine + [("order_id", orders[1])]), form))
    out.append(("order_id twice, other first", body([("order_id", orders[1])] + genuine), form))
    parts = b"".join(b'--B\r\nContent-Disposition: form-data; name="' + n.encode() + b'"\r\n\r\n'
                     + v.encode() + b"\r\n" for n, v in with_order(orders[1]))
    out.append(("multipart, other order", parts + b"--B--\r\n", "multipart/form-data; boundary=B"))
    out.append(("latin-1 charset", body(genuine), form + "; charset=latin-1"))
    signed = "".join(fields[name] for name in SIGNED).encode()
    for suffix in (b"0", b"000.00", b"&order_id=" + orders[1].encode()):
        glue, sign = md5_extend(fields["sign"], secret_len + len(signed), suffix)
        total = fields["total"].encode() + glue + suffix
        for order_id in orders[:2]:
            raw = "&".join(f"{n}={quote_from_bytes(total) if n == 'total' else v}"
                           if n != "sign" else f"sign={sign}" for n, v in with_order(order_id))
            out.append(("MD5 length extension", raw.encode(), form))
    return out


def test_captured_callback_gains_nothing(client, app, store, figures, tmp_path):
    secret = app.config["CHRONOPAY_SHARED_SECRET"]
    probe = b"not the secret, just checking the extension"
    glue, digest = md5_extend(hashlib.md5(probe).hexdigest(), len(probe), b"more")  # noqa: S324
    assert digest == hashlib.md5(probe + glue + b"more").hexdigest()  # noqa: S324
    genuine, orders = paid_and_pending(client, app)
    before = snapshot(store)
    variants = captured_variants(genuine, len(secret), orders)
    labels, failed = Counter(), []
    for label, body, content_type in variants:
        answer = post_callback(client, body, content_type)
        labels[label] += 1
        if answer.status_code >= 500 or snapshot(store) != before:
            failed.append(label)
    # Re-sent as GET (ChronoPay's cb_type=G) and as a POST with the fields in the query: a
    # duplicate either way; in both the query and the body: refused.
    query = urlencode(genuine)
    extra = [client.get(f"{CALLBACK}?{query}", environ_base=ALLOWED).status_code,
             post_callback(client, b"", query=query).status_code,
             post_callback(client, query.encode(), query=query).status_code]
    assert extra == [200, 200, 403] and snapshot(store) == before
    live = captured_at_once(tmp_path)
    runs = len(variants) + len(extra) + live["runs"]
    passed = runs - len(failed) - live["failed"]
    figures("Captured callback re-sent and re-arranged", runs, passed,
            f"{len(variants)} variants in-process ({len(labels)} kinds, incl. "
            f"{labels['re-split customer_id|transaction_id'] + labels['re-split transaction_id|transaction_type'] + labels['re-split transaction_type|total']}"  # noqa: E501
            f" re-splits and {labels['MD5 length extension']} MD5 length extensions) and "
            f"{live['runs']} at once to waitress: {len(failed) + live['failed']} state changes;"
            f" journal: {verdicts(store)}")
    assert not failed, Counter(failed)
    assert live["failed"] == 0, live


def captured_at_once(tmp_path):
    """A captured callback's variants sent concurrently to a real waitress."""
    server = LiveServer(tmp_path).start()
    db = Database(tmp_path / "live.sqlite3")
    try:
        a, b = open_order(server.url), open_order(server.url)
        genuine = callback_for(a)
        url = server.url + CALLBACK
        assert requests.post(url, data=genuine, timeout=30).status_code == 200
        before = db.state()
        variants = [body for _, body, content_type in captured_variants(
            genuine, len(SANDBOX["CHRONOPAY_SHARED_SECRET"]), [a["order_id"], b["order_id"],
                                                               "nope"])
            if content_type == "application/x-www-form-urlencoded"]
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(
                lambda body: requests.post(url, data=body, headers=headers, timeout=30),
                variants))
        failed = sum(a.status_code >= 500 for a in answers) + (db.state() != before)
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    return {"runs": len(variants), "failed": failed}


# --- Malformed HTTP straight at waitress -----------------------------------------------------

def test_malformed_http_straight_at_waitress(tmp_path, figures):
    server = LiveServer(tmp_path).start()
    db = Database(tmp_path / "live.sqlite3")
    try:
        report = rawhttp.judge("waitress", lambda payload: rawhttp.exchange(
            "127.0.0.1", server.port, payload), db.journal_counts)
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    figures("Malformed HTTP straight at waitress", report["runs"], report["passed"],
            rawhttp.summary(report))
    assert not report["problems"], report["problems"]


# --- Coverage-guided fuzz --------------------------------------------------------------------

def test_coverage_guided_fuzz_of_the_parsers(tmp_path, scale, figures):
    try:
        import atheris  # noqa: F401
    except ImportError:
        atheris = None
    runs, found, coverage = 0, [], []
    for name, seeds in fuzz_targets.SEEDS.items():
        if atheris is None:
            n, problem = hypothesis_fuzz(name, 2000 * scale)
            runs += n
            found += [problem] if problem else []
            continue
        corpus = tmp_path / name
        corpus.mkdir()
        for i, seed in enumerate(seeds):
            (corpus / f"seed{i}").write_bytes(seed)
        result = subprocess.run(
            [sys.executable, fuzz_targets.__file__, name, f"-runs={200_000 * scale}", "-seed=1",
             f"-max_total_time={60 * scale}", f"-artifact_prefix={tmp_path}/", str(corpus)],
            capture_output=True, text=True, timeout=300 * scale, cwd=ROOT)
        done = re.search(r"Done (\d+) runs", result.stderr)
        cov = re.findall(r"cov: (\d+) ft: (\d+)", result.stderr)
        runs += int(done.group(1)) if done else 0
        coverage.append(f"{name} cov {cov[-1][0]} ft {cov[-1][1]}" if cov else name)
        if result.returncode != 0 or not done:
            found.append(f"{name}: {result.stderr[-3000:]}")
    how = "atheris/libFuzzer" if atheris else "Hypothesis (atheris not installed)"
    figures(f"Coverage-guided fuzz ({how}): callback, amount, link", runs,
            runs - len(found), f"{runs} executions, {len(found)} crashes; "
            + "; ".join(coverage))
    assert not found, found[0]


def hypothesis_fuzz(name, examples):
    """The atheris targets driven by Hypothesis: (examples run, first problem or None)."""
    count = [0]
    target = fuzz_targets.TARGETS[name]

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.one_of(st.binary(max_size=400), st.builds(
        lambda seed, cut, b: seed[:cut % (len(seed) + 1)] + b + seed[cut % (len(seed) + 1) + 1:],
        st.sampled_from(fuzz_targets.SEEDS[name]), st.integers(0, 500), st.binary(max_size=8))))
    def run(data):
        count[0] += 1
        target(data)

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - reported as the figure's crash
        return count[0], f"{name}: {exc!r}"
    return count[0], None
