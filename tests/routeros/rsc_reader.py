"""A reader for the subset of RouterOS script that the portal's `.rsc` (`portal.wireguard.render.render_rsc`) uses,
run against a `tests.routeros.fake_routeros.RouterState`: what `/import` would do on a router.

The subset: `#` comment lines; commands `/menu words verb key=value ...` (verbs add, set, remove, find, move);
values bare, double-quoted or a `[...]` expression, read by `tests.routeros.rsc_tokenizer` (which refuses an
unescaped `$` in a string: variable substitution on a router); `find where key=value key~"regex"` (and `and`
between them); `:len`, `:pick LIST N`; and `:if (A > B) do={...} else={...}`. Anything else is a ScriptError, so
a script that leaves the subset fails the test instead of being read wrongly.
"""

from __future__ import annotations

import re

from tests.routeros.fake_routeros import RouterState
from tests.routeros.rsc_tokenizer import ScriptError, Token, tokenize

__all__ = ["ScriptError", "run_script"]

VERBS = ("add", "set", "remove", "find", "move", "print")


class Reader:
    def __init__(self, state: RouterState, tokens: list[Token]):
        self.state, self.tokens, self.at = state, tokens, 0

    def run(self) -> None:
        while not self._done():
            self._statement()

    # parsing helpers

    def _done(self) -> bool:
        return self.at >= len(self.tokens)

    def _peek(self) -> Token | None:
        return None if self._done() else self.tokens[self.at]

    def _next(self) -> Token:
        if self._done():
            raise ScriptError("unexpected end of script")
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _expect(self, text: str) -> None:
        token = self._next()
        if token.text != text:
            raise ScriptError(f"expected {text!r}, found {token.text!r}")

    def _skip_ends(self) -> None:
        while (token := self._peek()) is not None and token.kind == "end":
            self.at += 1

    def _at_terminator(self) -> bool:
        token = self._peek()
        return token is None or token.kind == "end" or (token.kind == "punct" and token.text in "]})")

    # statements

    def _statement(self) -> None:
        self._skip_ends()
        token = self._peek()
        if token is None:
            return
        if token.kind == "word" and token.text == ":if":
            self._if()
        else:
            self._command(None)

    def _block(self) -> None:
        self._expect("{")
        while True:
            self._skip_ends()
            token = self._peek()
            if token is None:
                raise ScriptError("unterminated block")
            if token.kind == "punct" and token.text == "}":
                self.at += 1
                return
            self._statement()

    def _skip_block(self) -> None:
        self._expect("{")
        depth = 1
        while depth:
            token = self._next()
            if token.kind == "punct":
                depth += {"{": 1, "}": -1}.get(token.text, 0)

    def _if(self) -> None:
        self._expect(":if")
        self._expect("(")
        left = self._operand()
        operator = self._next().text
        right = self._operand()
        self._expect(")")
        holds = _compare(left, operator, right)
        self._expect("do=")
        self._block() if holds else self._skip_block()
        token = self._peek()
        if token is not None and token.kind == "word" and token.text == "else=":
            self.at += 1
            self._skip_block() if holds else self._block()

    def _operand(self):
        token = self._peek()
        if token is not None and token.kind == "punct" and token.text == "[":
            return self._expression(None)
        return self._next().text

    def _expression(self, path: str | None):
        """`[ ... ]`: :len, :pick, or a command (a `find` gives a list of ids)."""
        self._expect("[")
        token = self._peek()
        if token is not None and token.kind == "word" and token.text in (":len", ":pick"):
            self.at += 1
            subject = self._operand()
            if token.text == ":len":
                result = len(subject)
            else:
                index = int(self._next().text)
                result = subject[index] if index < len(subject) else ""
        else:
            result = self._command(path)
        self._expect("]")
        return result

    def _command(self, path: str | None):
        token = self._next()
        if token.kind != "word":
            raise ScriptError(f"a command cannot start with {token.text!r}")
        if token.text.startswith("/"):
            path = token.text
            while (following := self._peek()) is not None and following.kind == "word" \
                    and following.text not in VERBS and "=" not in following.text:
                path += "/" + self._next().text
            verb = self._next().text
        else:
            verb = token.text
        if path is None or verb not in VERBS:
            raise ScriptError(f"not a command this reader knows: {path} {verb}")
        arguments: dict[str, object] = {}
        positional: list[object] = []
        conditions: list[tuple[str, str, str]] = []
        while not self._at_terminator():
            token = self._next()
            if token.kind == "word" and token.text == "where":
                conditions = self._conditions()
                break
            if token.kind == "word" and token.text.endswith("="):
                arguments[token.text[:-1]] = self._value()
            elif token.kind == "word" and "=" in token.text:
                key, _, value = token.text.partition("=")
                arguments[key] = value
            elif token.kind == "punct" and token.text == "[":
                self.at -= 1
                positional.append(self._expression(path))
            else:
                positional.append(token.text)
        return self._run(path, verb, arguments, positional, conditions)

    def _value(self):
        token = self._peek()
        if token is not None and token.kind == "punct" and token.text == "[":
            return self._expression(None)
        token = self._next()
        if not token.glued:
            raise ScriptError("a value must follow its = directly")
        return token.text

    def _conditions(self) -> list[tuple[str, str, str]]:
        conditions = []
        while not self._at_terminator():
            token = self._next()
            if token.text == "and":
                continue
            if token.text.endswith(("=", "~")):
                conditions.append((token.text[:-1], token.text[-1], self._next().text))
            elif "=" in token.text:
                key, _, value = token.text.partition("=")
                conditions.append((key, "=", value))
            else:
                raise ScriptError(f"unknown condition {token.text!r}")
        return conditions

    # running

    def _run(self, path: str, verb: str, arguments: dict, positional: list, conditions: list):
        if verb == "find":
            return self.state.find(path, lambda row: all(_holds(row, *condition) for condition in conditions))
        if verb == "remove":
            ids = [item for value in positional for item in (value if isinstance(value, list) else [value])]
            if ids:
                self.state.execute(f"{path}/remove", {".id": ",".join(ids)})
            return None
        values = {key: value if isinstance(value, str) else ",".join(value) for key, value in arguments.items()}
        rows, done = self.state.execute(f"{path}/{verb}", values)
        return done.get("ret")


BOOLEANS = {"yes": "true", "no": "false"}


def _holds(row: dict[str, str], key: str, operator: str, value: str) -> bool:
    current = row.get(key)
    if current is None:
        return False
    if operator == "~":
        return re.search(value, current) is not None
    return current == BOOLEANS.get(value, value)


def _compare(left, operator: str, right) -> bool:
    left, right = int(left), int(right)
    return {">": left > right, "<": left < right, "=": left == right, "!=": left != right,
            ">=": left >= right, "<=": left <= right}[operator]


def run_script(state: RouterState, text: str) -> None:
    """Import `text` into `state`, as `/import file-name=...` would."""
    Reader(state, tokenize(text)).run()
