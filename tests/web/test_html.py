"""The small pieces of HTML list rows repeat: what a reader and a machine see of a moment."""

from __future__ import annotations

from datetime import UTC, datetime

from portal.html import details, when


def test_a_moment_shows_to_the_second_in_utc_and_keeps_its_full_value_for_machines():
    moment = datetime(2026, 12, 4, 3, 16, 44, 123456, tzinfo=UTC)
    assert when(moment) == ('<time datetime="2026-12-04T03:16:44.123456+00:00" class="nowrap">'
                            "2026-12-04 03:16:44 UTC</time>")


def test_a_moment_on_the_second_and_no_moment():
    assert when(datetime(2026, 1, 2, 0, 0, tzinfo=UTC)) == ('<time datetime="2026-01-02T00:00:00+00:00" '
                                                            'class="nowrap">2026-01-02 00:00:00 UTC</time>')
    assert when(None) == "-"


def test_details_read_key_by_key_in_order_and_escape_what_a_user_typed():
    shown = details({"name": "<script>alert(1)</script>", "Address": "10.100.0.2", "changes": {"note": "a&b"}})
    assert shown == ('Address: <span class="mono">10.100.0.2</span>; '
                     'changes: <span class="mono">{&#39;note&#39;: &#39;a&amp;b&#39;}</span>; '
                     'name: <span class="mono">&lt;script&gt;alert(1)&lt;/script&gt;</span>')
    assert details({}) == "" and details(None) == ""
