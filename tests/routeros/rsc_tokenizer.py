"""A RouterOS script tokenizer, and a validator that accepts only what the portal's `.rsc` does.

`tokenize` reads RouterOS script syntax: statements end at a line break or `;`; `#` starts a comment at the start
of a statement and runs to the end of the physical line; a backslash at the end of a line joins it to the next;
double-quoted strings take RouterOS escapes (`\\\\ \\" \\$ \\? \\_ \\n \\r \\t \\a \\b \\f \\v` and `\\HH` in hex) and
come out decoded; `[ ] { } ( )` are punctuation; everything else is a word (`/ip`, `add`, `name=`, `:if`).
It refuses what would change a script's meaning on a router: an unescaped `$` (variable substitution) or `?`
(console help) in a string, a raw line break in a string, a stray backslash, an unterminated string.

`validate` then checks a whole script against the portal's allow-list (`COMMANDS`): each statement is one of
the (menu, command) pairs `portal.wireguard.render.render_rsc` emits, each with only its own argument keys, or
the one `:if` around the firewall rule; `[...]` only as a `find` or `:pick`/`:len` over one; nothing else
starting with `:` (no `:execute`, `:global`, `:parse`...), no other menu (`/system`, `/file`, `/tool`...),
no `;`, no `$` outside strings, and plain printable ASCII throughout. Failures raise `ScriptError` naming
the line, so a test shows what slipped through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ESCAPES = {"\\": "\\", '"': '"', "$": "$", "?": "?", "_": " ", "n": "\n", "r": "\r", "t": "\t", "a": "\a",
           "b": "\b", "f": "\f", "v": "\v"}
HEX_ESCAPE = re.compile(r"[0-9A-F]{2}")
PUNCTUATION = "[]{}()"
BLANKS = " \t\r"
WORD_END = BLANKS + '\n;"\\' + PUNCTUATION


class ScriptError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    kind: str  # word, string, punct, end (end of statement)
    text: str  # a string's decoded value
    glued: bool = False  # no blank between it and the token before
    line: int = 1  # the physical line it starts on


def tokenize(text: str) -> list[Token]:
    return _Tokenizer(text).tokens()


class _Tokenizer:
    def __init__(self, text: str):
        self.text, self.at, self.line = text, 0, 1
        self.found: list[Token] = []
        self.glued, self.statement_start = False, True

    def tokens(self) -> list[Token]:
        while self.at < len(self.text):
            self._step(self.text[self.at])
        return self.found

    def _step(self, char: str) -> None:
        if char in "\n;":
            self._add("end", char, length=1)
            self.glued, self.statement_start = False, True
            if char == "\n":
                self.line += 1
        elif char in BLANKS:
            self.at, self.glued = self.at + 1, False
        elif char == "\\":
            self._line_continuation()
        elif char == "#" and self.statement_start:
            self._comment()
        elif char == '"':
            start_line = self.line
            value = self._string()
            self.found.append(Token("string", value, self.glued, start_line))
            self.glued, self.statement_start = True, False
        elif char in PUNCTUATION:
            self._add("punct", char, length=1)
            self.glued, self.statement_start = True, char == "{"
        else:
            start = self.at
            while self.at < len(self.text) and self.text[self.at] not in WORD_END:
                self.at += 1
            self.found.append(Token("word", self.text[start:self.at], self.glued, self.line))
            self.glued, self.statement_start = True, False

    def _add(self, kind: str, text: str, length: int) -> None:
        self.found.append(Token(kind, text, self.glued, self.line))
        self.at += length

    def _line_continuation(self) -> None:
        rest = self.text[self.at + 1:self.at + 3]
        if not (rest.startswith("\n") or rest == "\r\n"):
            raise ScriptError(f"line {self.line}: a backslash outside a string that does not end the line")
        self.at += 1 + rest.index("\n") + 1
        self.line += 1
        self.glued = False

    def _comment(self) -> None:
        end = self.text.find("\n", self.at)
        end = len(self.text) if end == -1 else end
        if self.text[self.at:end].rstrip("\r").endswith("\\"):
            raise ScriptError(f"line {self.line}: a comment ending in a backslash (does the next line continue it?)")
        self.at = end

    def _string(self) -> str:
        out = bytearray()
        self.at += 1
        while True:
            if self.at >= len(self.text):
                raise ScriptError(f"line {self.line}: unterminated string")
            char = self.text[self.at]
            if char == '"':
                self.at += 1
                return _decoded(out, self.line)
            if char in "$?":
                raise ScriptError(f"line {self.line}: unescaped {char} in a string: RouterOS would "
                                  + ("substitute a variable" if char == "$" else "show help"))
            if char in "\r\n":
                raise ScriptError(f"line {self.line}: a line break inside a string")
            if char == "\\":
                out += self._escape()
                continue
            out += char.encode("utf-8")
            self.at += 1

    def _escape(self) -> bytes:
        following = self.text[self.at + 1:self.at + 3]
        if HEX_ESCAPE.fullmatch(following):
            self.at += 3
            return bytes([int(following, 16)])
        if following[:1] in ESCAPES:
            self.at += 2
            return ESCAPES[following[:1]].encode()
        raise ScriptError(f"line {self.line}: unknown escape \\{following[:1]}")


def _decoded(raw: bytearray, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScriptError(f"line {line}: a string whose escaped bytes are not UTF-8") from None


# --- the portal's allow-list ------------------------------------------------------------------------------

QUOTED = "quoted"  # a string literal, any content (its escapes were checked by the tokenizer)
EXPRESSION = "expression"  # `[:pick [find ...] N]` or `[find ...]`
_IPV4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_BARE = {
    "name": r"[A-Za-z0-9_.-]{1,15}", "interface": r"[A-Za-z0-9_.-]{1,15}", "in-interface": r"[A-Za-z0-9_.-]{1,15}",
    "listen-port": r"\d{1,5}", "endpoint-port": r"\d{1,5}", "mtu": r"\d{1,5}",
    "address": _IPV4 + r"/\d{1,2}", "allowed-address": _IPV4 + r"/\d{1,2}", "src-address": _IPV4,
    "persistent-keepalive": r"\d{1,5}s", "chain": "input", "action": "accept",
}
INTERFACE_KEYS = {"name": "bare", "listen-port": "bare", "mtu": "bare", "private-key": QUOTED, "comment": QUOTED}
ADDRESS_KEYS = {"address": "bare", "interface": "bare", "comment": QUOTED}
PEER_KEYS = {"interface": "bare", "public-key": QUOTED, "preshared-key": QUOTED, "endpoint-address": QUOTED,
             "endpoint-port": "bare", "allowed-address": "bare", "persistent-keepalive": "bare", "comment": QUOTED}
FILTER_KEYS = {"chain": "bare", "action": "bare", "in-interface": "bare", "src-address": "bare", "comment": QUOTED,
               "place-before": EXPRESSION}
MENUS = ("/interface wireguard peers", "/interface wireguard", "/ip firewall filter", "/ip address")
# (menu, command) -> its argument keys and their kinds; `remove` takes one `[find ...]` and no keys.
COMMANDS: dict[tuple[str, str], dict[str, str]] = {
    ("/interface wireguard", "add"): INTERFACE_KEYS,
    ("/interface wireguard", "remove"): {},
    ("/interface wireguard peers", "add"): PEER_KEYS,
    ("/interface wireguard peers", "remove"): {},
    ("/ip address", "add"): ADDRESS_KEYS,
    ("/ip address", "remove"): {},
    ("/ip firewall filter", "add"): FILTER_KEYS,
    ("/ip firewall filter", "remove"): {},
}
FIND_CONDITIONS = {"comment~": QUOTED, "dynamic=": "no"}
COMPARISONS = (">", "<", "=", "!=", ">=", "<=")


def validate(text: str) -> None:
    """ScriptError unless `text` is plain ASCII and made only of the statements the portal emits."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not (line.isascii() and line.isprintable()):
            raise ScriptError(f"line {number}: not plain printable ASCII: {line!r}")
    _Validator(tokenize(text)).script()


class _Validator:
    def __init__(self, tokens: list[Token]):
        self.tokens, self.at = tokens, 0

    def script(self) -> None:
        while self._peek() is not None:
            self._statement_or_blank()

    def _peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _next(self, what: str) -> Token:
        token = self._peek()
        if token is None:
            raise ScriptError(f"the script ends where {what} should follow")
        self.at += 1
        return token

    def _expect(self, text: str, kind: str = "word", glued: bool | None = None) -> Token:
        token = self._next(repr(text))
        if token.kind != kind or token.text != text or (glued is not None and token.glued != glued):
            raise ScriptError(f"line {token.line}: expected {text!r}, found {token.text!r}")
        return token

    def _statement_or_blank(self) -> None:
        token = self._next("a statement")
        if token.kind == "end":
            if token.text == ";":
                raise ScriptError(f"line {token.line}: `;` joins statements; the portal writes one a line")
            return
        self.at -= 1
        self._statement()
        self._end_of_statement()

    def _end_of_statement(self) -> None:
        token = self._peek()
        if token is not None and not (token.kind == "end" and token.text == "\n") and token.text != "}":
            raise ScriptError(f"line {token.line}: {token.text!r} after the end of a statement")

    def _statement(self) -> None:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text == ":if":
            self._if()
        else:
            self._command()

    def _if(self) -> None:
        self._expect(":if")
        self._expect("(", "punct")
        self._len_of_find()
        operator = self._next("a comparison")
        number = self._next("a number")
        if operator.text not in COMPARISONS or not number.text.isdigit():
            raise ScriptError(f"line {operator.line}: not a comparison with a number")
        self._expect(")", "punct")
        self._expect("do=", glued=False)
        self._block()
        token = self._peek()
        if token is not None and token.kind == "word" and token.text == "else=":
            self.at += 1
            self._block()

    def _block(self) -> None:
        self._expect("{", "punct", glued=True)
        while True:
            token = self._next("a closing }")
            if token.kind == "punct" and token.text == "}":
                return
            if token.kind == "end" and token.text == "\n":
                continue
            self.at -= 1
            self._statement()
            self._end_of_statement()

    def _command(self) -> None:
        menu = self._menu()
        verb = self._next("a command")
        keys = COMMANDS.get((menu, verb.text))
        if keys is None:
            raise ScriptError(f"line {verb.line}: `{menu} {verb.text}` is not a command the portal emits")
        if verb.text == "remove":
            self._find(relative=True)
            return
        seen: set[str] = set()
        while (token := self._peek()) is not None and token.kind == "word":
            key = self._argument(keys, token)
            if key in seen:
                raise ScriptError(f"line {token.line}: {key}= given twice")
            seen.add(key)

    def _menu(self) -> str:
        first = self._next("a menu")
        if first.kind != "word" or not first.text.startswith("/"):
            raise ScriptError(f"line {first.line}: {first.text!r} is not a command the portal emits")
        words = [first.text]
        while (token := self._peek()) is not None and token.kind == "word" and " ".join(words) not in MENUS:
            words.append(self._next("a menu").text)
        menu = " ".join(words)
        if menu == "/interface wireguard" and (token := self._peek()) is not None and token.text == "peers":
            menu += " " + self._next("peers").text
        if menu not in MENUS:
            raise ScriptError(f"line {first.line}: the menu {menu!r} is not one the portal uses")
        return menu

    def _argument(self, keys: dict[str, str], token: Token) -> str:
        self.at += 1
        key, equals, bare = token.text.partition("=")
        if not equals or key not in keys:
            raise ScriptError(f"line {token.line}: argument {token.text!r} is not one the portal gives")
        kind = keys[key]
        if kind == "bare":
            if not re.fullmatch(_BARE[key], bare):
                raise ScriptError(f"line {token.line}: {key}={bare!r} is not a plain {key}")
        elif bare:
            raise ScriptError(f"line {token.line}: {key}= takes a {kind} value, not {bare!r}")
        elif kind == QUOTED:
            self._glued_value(token, "string")
        else:
            self._pick_of_find()
        return key

    def _glued_value(self, after: Token, kind: str) -> Token:
        value = self._next(f"the value of {after.text}")
        if value.kind != kind or not value.glued:
            raise ScriptError(f"line {after.line}: {after.text} must be followed directly by a {kind}")
        return value

    def _pick_of_find(self) -> None:
        """`[:pick [/ip firewall filter find where dynamic=no] 0]`"""
        self._expect("[", "punct")
        self._expect(":pick")
        self._find(relative=False)
        if not self._next("an index").text.isdigit():
            raise ScriptError("`:pick` takes a number")
        self._expect("]", "punct")

    def _len_of_find(self) -> None:
        self._expect("[", "punct")
        self._expect(":len")
        self._find(relative=False)
        self._expect("]", "punct")

    def _find(self, relative: bool) -> None:
        """`[find where ...]` in the menu of the command, or `[/ip firewall filter find where ...]`."""
        self._expect("[", "punct")
        if not relative:
            self._menu()
        self._expect("find")
        self._expect("where")
        while (token := self._next("a closing ]")).kind != "punct":
            condition = next((name for name in FIND_CONDITIONS if token.text.startswith(name)), None)
            if token.kind != "word" or condition is None:
                raise ScriptError(f"line {token.line}: the condition {token.text!r} is not one the portal uses")
            expected = FIND_CONDITIONS[condition]
            if expected == QUOTED and token.text == condition:
                self._glued_value(token, "string")
            elif token.text != condition + expected:
                raise ScriptError(f"line {token.line}: the condition {token.text!r} is not one the portal uses")
        if token.text != "]":
            raise ScriptError(f"line {token.line}: expected ], found {token.text!r}")
