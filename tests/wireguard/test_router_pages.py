"""The routers list's pages: every page holds exactly the rows of that slice of the whole order, whichever end
the database reads it from (pages in the second half are read from the end, so the last page stays cheap)."""

from __future__ import annotations

import pytest

from portal.audit.service import Actor
from portal.extensions import db
from portal.wireguard import service

NAMES = ["delta", "Alpha", "echo", "bravo", "Foxtrot", "charlie", "golf"]


@pytest.fixture
def tenant_with_routers(app, tenant_admin):
    tenant_id = tenant_admin[0]
    with app.app_context():
        for name in NAMES:
            service.add_router(Actor.system("test"), tenant_id, name)
        db.session.commit()
    return tenant_id


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("per_page", [1, 2, 3, 7, 10])
def test_each_page_is_its_slice_of_the_case_insensitive_order(app, tenant_with_routers, descending, per_page):
    expected = sorted(NAMES, key=str.lower, reverse=descending)
    with app.app_context():
        pages = [service.routers_page(tenant_with_routers, descending=descending, page=number, per_page=per_page)
                 for number in range(1, len(NAMES) // per_page + 2)]
        seen = [[router.name for router in page.items] for page in pages]
    assert [name for names in seen for name in names] == expected
    assert all(len(names) == per_page for names in seen[:-1] if names)
    assert pages[0].total == len(NAMES) and pages[0].pages == -(-len(NAMES) // per_page)
    assert not pages[0].has_prev and pages[-1].has_next is False


def test_newest_first_and_a_page_past_the_end(app, tenant_with_routers):
    with app.app_context():
        newest = service.routers_page(tenant_with_routers, sort="created", descending=True, page=3, per_page=3)
        past = service.routers_page(tenant_with_routers, page=10**12, per_page=3)
        assert [router.name for router in newest.items] == [NAMES[0]]  # the oldest, alone on the last page
        assert newest.has_prev and newest.prev_num == 2 and not newest.has_next
        assert past.items == [] and past.total == len(NAMES)
